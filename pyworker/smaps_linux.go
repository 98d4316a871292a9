package pyworker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ReadMemory reads the memory of process pid from /proc/<pid>/smaps_rollup
// (Linux 4.14+). On a kernel without smaps_rollup it falls back to
// /proc/<pid>/statm: RSS only.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if errors.Is(err, fs.ErrNotExist) && procExists(pid) {
		rss, err := ResidentBytes(pid)
		return Memory{RSS: rss}, err
	}
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	m, err := parseSmapsRollup(f)
	if err != nil {
		return Memory{}, fmt.Errorf("pyworker: /proc/%d/smaps_rollup: %w", pid, err)
	}
	return m, nil
}

func procExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// parseSmapsRollup reads the Rss, Pss and Private_* lines (in kB) of an
// smaps_rollup file.
func parseSmapsRollup(r io.Reader) (Memory, error) {
	var m Memory
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		var dst *uint64
		switch {
		case !ok:
			continue
		case k == "Rss":
			dst = &m.RSS
		case k == "Pss":
			dst = &m.PSS
		case k == "Private_Clean" || k == "Private_Dirty":
			dst = &m.USS
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("unexpected line %q", sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		*dst += kb << 10
		if k == "Rss" || k == "Pss" {
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if found < 2 {
		return Memory{}, errors.New("no Rss or Pss line")
	}
	return m, nil
}
