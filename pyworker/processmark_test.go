package pyworker

import "testing"

func TestProcessMarkRoundTrip(t *testing.T) {
	for _, m := range []processMark{
		{RunID: "0a1b2c3d4e5f6071", Seq: 12, Host: HostID{Pid: 4242, Start: 987654}},
		{RunID: "", Seq: 1},
		{RunID: "with:colons", Seq: 3, Host: HostID{Pid: 1, Start: 2}},
	} {
		got, ok := parseProcessMark(m.String())
		if !ok || got != m {
			t.Errorf("%q reads back as %+v %v, want %+v", m.String(), got, ok, m)
		}
	}
	for _, bad := range []string{"", "a:b:c", "r:x:1:2", "r:1:y:2", "r:1:2:z"} {
		if m, ok := parseProcessMark(bad); ok {
			t.Errorf("%q read as the mark %+v", bad, m)
		}
	}
}

func TestMarkIn(t *testing.T) {
	env := []byte("A=1\x00" + envProcessMark + "=r:1:2:3\x00B=" + envProcessMark + "=no\x00")
	if got, ok := markIn(env); !ok || got != "r:1:2:3" {
		t.Fatalf("markIn = %q %v", got, ok)
	}
	if got, ok := markIn([]byte("A=1\x00X" + envProcessMark + "=r:1:2:3\x00")); ok {
		t.Fatalf("a variable whose name only ends in the mark's read as %q", got)
	}
}
