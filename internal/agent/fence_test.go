package agent

import (
	"strings"
	"testing"
	"time"
)

// TestFenceState: when a Pull-mode agent may renew its heartbeat. Each
// step is applied in order; want is what blocked says after it ("" when
// the heartbeat may be renewed): "ok" when it may, a part of the reason
// when it may not, nothing when that step is not looked at.
func TestFenceState(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		do   func(f *fenceState, round *string)
		at   time.Duration
		want string
	}
	begin := func(f *fenceState, round *string) { *round, _ = f.begin() }
	fenced := func(at time.Duration) func(*fenceState, *string) {
		return func(f *fenceState, round *string) { f.fenced(*round, t0.Add(at)) }
	}
	observe := func(m string) func(*fenceState, *string) {
		return func(f *fenceState, _ *string) { f.observe(m) }
	}
	cleared := func(m string) func(*fenceState, *string) {
		return func(f *fenceState, _ *string) { f.cleared(m) }
	}
	for name, steps := range map[string][]step{
		"no round yet: withheld": {
			{do: observe(""), want: "first round"},
		},
		"a round fenced: beats": {
			{do: begin}, {do: fenced(0), want: "ok"}, {do: observe(""), at: time.Second, want: "ok"},
		},
		"rounds failing for less than RoundStale: still beats": {
			{do: begin}, {do: fenced(0)}, {do: observe(""), at: RoundStale, want: "ok"},
		},
		"no round for longer than RoundStale: withheld": {
			{do: begin}, {do: fenced(0)}, {do: observe(""), at: RoundStale + time.Second, want: "no round has read"},
		},
		"the hub's Lost mark withholds it even after an earlier round": {
			{do: begin}, {do: fenced(0)}, {do: observe("m1"), at: time.Second, want: "declared this provider Lost"},
		},
		"a round begun before the mark was seen does not count": {
			{do: begin}, {do: fenced(0)}, {do: begin}, {do: observe("m1")}, {do: fenced(time.Second), at: time.Second, want: "declared this provider Lost"},
		},
		"a round begun after the mark was seen, once it fenced: beats, and the mark is cleared": {
			{do: begin}, {do: fenced(0)}, {do: observe("m1")}, {do: begin}, {do: fenced(time.Second), at: time.Second, want: "ok"},
			{do: cleared("m1"), at: time.Second, want: "ok"}, {do: observe(""), at: 2 * time.Second, want: "ok"},
		},
		"rounds on the watch's view count from the list they rest on": {
			{do: begin}, {do: fenced(0)}, {do: begin}, {do: fenced(RoundStale / 2)}, {do: begin}, {do: fenced(RoundStale / 2)},
			{do: observe(""), at: RoundStale/2 + RoundStale, want: "ok"},
			{do: observe(""), at: RoundStale/2 + RoundStale + time.Second, want: "no round has read"},
		},
		"a round reporting an older read does not move it back": {
			{do: begin}, {do: fenced(time.Minute)}, {do: begin}, {do: fenced(0)},
			{do: observe(""), at: time.Minute + RoundStale, want: "ok"},
		},
		"a second Lost after the first was cleared: withheld again": {
			{do: begin}, {do: fenced(0)}, {do: observe("m1")}, {do: begin}, {do: fenced(time.Second)}, {do: cleared("m1")},
			{do: observe("m2"), at: 2 * time.Second, want: "declared this provider Lost"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := &fenceState{}
			var round string
			for i, s := range steps {
				s.do(f, &round)
				got := f.blocked(t0.Add(s.at))
				if s.want == "" {
					continue
				}
				if (s.want == "ok") != (got == "") || s.want != "ok" && !strings.Contains(got, s.want) {
					t.Fatalf("step %d: blocked %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

// TestFenceStateSaysWhenARoundMustList: a round may rest on the watch's
// view only once a first round fenced and no Lost mark awaits fencing;
// otherwise it must read the hub itself.
func TestFenceStateSaysWhenARoundMustList(t *testing.T) {
	f := &fenceState{}
	t0 := time.Now()
	must := func(want bool, when string) {
		t.Helper()
		if _, got := f.begin(); got != want {
			t.Errorf("%s: must list %v, want %v", when, got, want)
		}
	}
	must(true, "before any round")
	f.fenced("", t0)
	must(false, "after a round fenced")
	f.observe("m1")
	must(true, "after the hub's Lost mark")
	f.fenced("", t0)
	must(true, "after a round begun before the mark")
	round, _ := f.begin()
	f.fenced(round, t0)
	must(false, "after a round begun after the mark fenced")
	f.cleared("m1")
	must(false, "after the mark was cleared")
}
