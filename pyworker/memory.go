package pyworker

// Memory is a process's memory, in bytes.
type Memory struct {
	// RSS is the resident set size: every page in RAM, shared ones included.
	RSS uint64
	// PSS is the proportional set size: shared pages divided among the
	// processes mapping them, so a pool's PSS adds up to what it costs.
	// 0 when unknown.
	PSS uint64
	// USS is the private memory (Private_Clean + Private_Dirty): what the
	// process's exit would free. 0 when unknown.
	USS uint64
}
