//go:build !linux

package pyworker

type oomWatch struct{}

func newOOMWatch(int) *oomWatch { return nil }

func (*oomWatch) verdict() OOMVerdict {
	return OOMVerdict{Detail: "out-of-memory kills are only told apart on Linux (cgroup v2)"}
}
