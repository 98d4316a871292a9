//go:build !linux

package pyworker

import (
	"errors"

	"github.com/hashicorp/go-hclog"
)

// Outside Linux the host cannot name itself by start time, so workers carry
// no --host-pid / --host-start, run directories get no owner file, and
// nothing is swept: the stdin pipe the worker watches is the only guard.
var errNoHostID = errors.New("host identity (pid and start time) is only read on Linux")

func selfHostID() (HostID, error) { return HostID{}, errNoHostID }

func pidNamespace() (string, error) { return "", errNoHostID }

// hostAlive answers true: without start times a sweep cannot tell.
func hostAlive(HostID) bool { return true }

// SweepOrphans does nothing outside Linux.
func SweepOrphans(hclog.Logger) (SweepReport, error) { return SweepReport{}, nil }

// killEscaped does nothing outside Linux: there is no /proc to find a
// worker's descendants by their process mark.
func killEscaped(string) {}
