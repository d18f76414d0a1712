package extproc_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counterFrom returns a counter reading the labelled child's current value.
func counterFrom(t *testing.T, g prometheus.Gatherer, name, label, value string) prometheus.Counter {
	t.Helper()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "snapshot"})
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					c.Add(m.GetCounter().GetValue())
				}
			}
		}
	}
	return c
}

// waitFor polls cond (an event delivered asynchronously by the server) for
// up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}
