// Package e2e holds end-to-end tests that run the hub manager, provider
// agents and the CLI against a local federation (package testbed).
package e2e
