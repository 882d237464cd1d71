package main

import (
	"io"
	"testing"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--kubeconfig", "p.kubeconfig", "--hub-kubeconfig", "h.kubeconfig", "--namespace", "ns", "--zap-log-level", "debug"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.kubeconfig != "p.kubeconfig" || o.hubKubeconfig != "h.kubeconfig" || o.namespace != "ns" {
		t.Errorf("parsed %+v", o)
	}
	if _, err := parseFlags([]string{"--nope"}, io.Discard); err == nil {
		t.Error("an unknown flag was accepted")
	}
}
