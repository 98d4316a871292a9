package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/snakepit-go/snakepit/telemetry"
)

// envAdminAddr names the environment variable that gives --addr's default.
const envAdminAddr = "SNAKEPIT_ADMIN_ADDR"

// defaultAdminAddr is --addr's default when $SNAKEPIT_ADMIN_ADDR is unset.
const defaultAdminAddr = "127.0.0.1:9464"

// maxInspectBody bounds the report read from the endpoint.
const maxInspectBody = 64 << 20

// inspectOptions are the flags of snakepit inspect.
type inspectOptions struct {
	addr            string
	pool            string // "": every pool
	detailed        bool
	format          string // "table" or "json"
	recommendations bool
	color           string // "auto", "always" or "never"
	timeout         time.Duration
}

func newInspectCmd() *cobra.Command {
	o := inspectOptions{}
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show a running runtime's pools, workers and saturation",
		Long: `inspect asks a running runtime's admin endpoint (Config.AdminAddr) for its
report (GET /inspect) and prints it: a row per pool with its profile, Python,
GIL, ready workers, utilisation, load, queue, calls that waited or were
refused, restarts, recycles and saturation; with --detailed a row per worker
(pid, state, load, uptime, calls served, restarts, RSS, PSS, last exit); with
--recommendations what the inspector advises. --format json prints the
report in the telemetry package's JSON schema instead.

Utilisation is coloured (green, yellow at warn, red when critical) when
stdout is a terminal and NO_COLOR is unset (and TERM is not dumb), or with
--color always.

Exit status: 0 when the report was printed, 1 when the endpoint could not be
reached, answered with an error (an unknown --pool) or with a body that is
not a report, 2 on bad flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addr := os.Getenv(envAdminAddr)
	if addr == "" {
		addr = defaultAdminAddr
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", addr, "the admin endpoint, HOST:PORT (default: $"+envAdminAddr+", else "+defaultAdminAddr+")")
	f.StringVar(&o.pool, "pool", "", "show only this pool (default: every pool)")
	f.BoolVar(&o.detailed, "detailed", false, "a row per worker under each pool")
	f.StringVar(&o.format, "format", "table", "output: table or json")
	f.BoolVar(&o.recommendations, "recommendations", false, "the inspector's recommendations under each pool (table)")
	f.StringVar(&o.color, "color", "auto", "colour utilisation: auto (when stdout is a terminal and NO_COLOR is unset), always or never")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the endpoint's answer")
	return cmd
}

// inspectURL checks the flags and returns the report's URL.
func (o *inspectOptions) inspectURL() (string, error) {
	if o.format != "table" && o.format != "json" {
		return "", fmt.Errorf("--format %q: want table or json", o.format)
	}
	switch o.color {
	case "auto", "always", "never":
	default:
		return "", fmt.Errorf("--color %q: want auto, always or never", o.color)
	}
	if o.timeout <= 0 {
		return "", fmt.Errorf("--timeout %s: want more than 0", o.timeout)
	}
	addr, err := normaliseAdminAddr(o.addr)
	if err != nil {
		return "", err
	}
	o.addr = addr
	u := url.URL{Scheme: "http", Host: addr, Path: "/inspect"}
	if o.pool != "" {
		u.RawQuery = url.Values{"pool": {o.pool}}.Encode()
	}
	return u.String(), nil
}

// normaliseAdminAddr accepts HOST:PORT, :PORT (loopback, as the runtime
// binds it) and http://HOST:PORT[/].
func normaliseAdminAddr(addr string) (string, error) {
	s := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "http://"), "/")
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return "", fmt.Errorf("--addr %q: want HOST:PORT, e.g. 127.0.0.1:9464", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func (o *inspectOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	u, err := o.inspectURL()
	if err != nil {
		return err
	}
	rep, err := o.fetch(ctx, u)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintln(stderr, "snakepit:", err)
		return errChecksFailed
	}
	if o.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return telemetry.RenderTable(stdout, rep, telemetry.TableOptions{
		Detailed: o.detailed, Recommendations: o.recommendations, Color: useColor(o.color, stdout, os.Getenv)})
}

// fetch GETs the report. Its errors say what went wrong in words for the
// operator.
func (o *inspectOptions) fetch(ctx context.Context, u string) (telemetry.Report, error) {
	var rep telemetry.Report
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return rep, err
	}
	req.Header.Set("Accept", "application/json")
	client := &http.Client{Transport: &http.Transport{Proxy: nil}} // an admin endpoint is local: no $HTTP_PROXY
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return rep, o.reachError(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInspectBody))
	if err != nil {
		return rep, o.reachError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		if resp.StatusCode == http.StatusNotFound && o.pool != "" && strings.HasPrefix(msg, "no pool") {
			return rep, fmt.Errorf("%s at %s (GET %s: %s)", msg, o.addr, u, resp.Status)
		}
		if resp.StatusCode == http.StatusNotFound {
			return rep, fmt.Errorf("%s has no /inspect (%s: %s): is it a snakepit admin endpoint (Config.AdminAddr)?", o.addr, resp.Status, msg)
		}
		return rep, fmt.Errorf("the admin endpoint at %s answered %s: %s", o.addr, resp.Status, msg)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("the admin endpoint at %s answered with bad JSON, not an inspect report: %v", o.addr, err)
	}
	return rep, nil
}

// reachError explains an error from dialling or reading.
func (o *inspectOptions) reachError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no admin endpoint at %s: start the runtime with Config.AdminAddr set (e.g. \":9464\") or pass --addr", o.addr)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no answer from the admin endpoint at %s within %s (--timeout)", o.addr, o.timeout)
	}
	return fmt.Errorf("cannot reach the admin endpoint at %s: %v", o.addr, err)
}

// useColor decides --color: always, never, or (auto) when w is a terminal,
// NO_COLOR is unset and TERM is not dumb.
func useColor(mode string, w io.Writer, getenv func(string) string) bool {
	switch mode {
	case "always":
		return true
	case "never":
		return false
	}
	if getenv("NO_COLOR") != "" || getenv("TERM") == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
