package controllers

import (
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/bound"
)

// setCondition sets a condition with its message bounded: messages carry
// text from providers and tenants (error bodies, Job conditions), and a
// long one must never make the status write fail.
func setCondition(conds *[]metav1.Condition, c metav1.Condition) {
	c.Message = bound.Message(c.Message)
	apimeta.SetStatusCondition(conds, c)
}
