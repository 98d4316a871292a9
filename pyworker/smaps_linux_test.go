package pyworker

import (
	"os"
	"strings"
	"testing"
)

func TestReadMemoryOfThisProcess(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS == 0 || m.PSS == 0 || m.USS == 0 || m.PSS > m.RSS || m.USS > m.RSS {
		t.Errorf("%+v: want all > 0, PSS and USS ≤ RSS", m)
	}
}

func TestReadMemoryOfNoProcess(t *testing.T) {
	if _, err := ReadMemory(1 << 30); err == nil {
		t.Error("no error for a pid that cannot exist")
	}
}

func TestParseSmapsRollup(t *testing.T) {
	const rollup = `55d0c0a00000-7ffd2b9fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               10240 kB
Pss:                4096 kB
Pss_Anon:           2048 kB
Shared_Clean:       6000 kB
Private_Clean:      1024 kB
Private_Dirty:      2048 kB
`
	m, err := parseSmapsRollup(strings.NewReader(rollup))
	if want := (Memory{RSS: 10240 << 10, PSS: 4096 << 10, USS: 3072 << 10}); err != nil || m != want {
		t.Errorf("got %+v, %v; want %+v", m, err, want)
	}
	for _, bad := range []string{"", "Rss: 12 MB\nPss: 1 kB\n", "Rss: x kB\nPss: 1 kB\n", "Rss: 12 kB\n"} {
		if _, err := parseSmapsRollup(strings.NewReader(bad)); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}
