// Command loadtest measures the relay's cost against a bare reverse proxy
// and against calling the upstream directly, all in one run.
//
// It starts three server processes by re-executing itself: the fake
// Anthropic API (upstream/upstreamtest), a bare httputil.ReverseProxy that
// only swaps the key (the calibration point), and the relay with a key
// that has a token limit, and usage recording: in SQLite in a temporary
// directory (-mode embedded) or in a temporary Postgres database, with the
// limiter on Redis given -redis-url (-mode postgres). Then it drives the
// same load through the same client at each in turn and prints, side by
// side, throughput, latency, errors, CPU time per request and RSS, the
// relay's ratios to the bare proxy, and whether they meet the targets.
// BENCHMARKS.md at the repository root has results.
//
//	go run ./internal/cmd/loadtest -duration 5s -concurrency 32 -streams 1000
//
// Every server listens on 127.0.0.1. Phases end by time and the program by
// itself (its whole run has a deadline); the servers die with it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("loadtest: ")
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "serve-") {
		if err := serve(os.Args[1], os.Args[2:]); err != nil {
			log.Fatalf("%s: %v", os.Args[1], err)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		log.Fatal(err)
	}
}

// options are the command-line flags.
type options struct {
	Duration    time.Duration `json:"duration_ns"`
	Concurrency int           `json:"concurrency"`
	Rounds      int           `json:"rounds"`
	Rate        float64       `json:"rate"`
	Streams     int           `json:"streams"`
	Deltas      int           `json:"events"`
	PromptBytes int           `json:"prompt_bytes"`
	EventDelay  time.Duration `json:"event_delay_ns"`
	Mode        string        `json:"mode"`
	PostgresURL string        `json:"-"`
	RedisURL    string        `json:"-"`
	Phases      string        `json:"phases"`
	JSON        bool          `json:"-"`
	CPUProfile  string        `json:"-"`
	BareProfile string        `json:"-"`
	UpstreamH2C bool          `json:"upstream_h2c"`
}

const allPhases = "open,latency,nonstream,stream,rate,paced"

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measured phase, per target")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "connections of the fixed-concurrency phases")
	fs.IntVar(&o.Rounds, "rounds", 3, "slices each phase's -duration is cut into, the targets taking turns")
	fs.Float64Var(&o.Rate, "rate", 0, "requests/s of the fixed-rate phase; 0 skips it")
	fs.IntVar(&o.Streams, "streams", 1000, "streams held open at once in the RSS phase; 10000 needs an open-file limit (ulimit -n) above 20,200, as the relay holds two sockets per stream, or above 10,200 with -upstream-h2c")
	fs.IntVar(&o.Deltas, "events", 16, "text_delta events per stream (each stream has 6 more: message_start, content_block_start, ping, content_block_stop, message_delta, message_stop)")
	fs.IntVar(&o.PromptBytes, "prompt-bytes", 0, "pad the user message to this many bytes (Claude Code sends tens to hundreds of KB); 0 sends a one-line prompt")
	fs.DurationVar(&o.EventDelay, "event-delay", 20*time.Millisecond, "the fake's delay between events in the paced stream phase (Claude streams a delta every 10 to 50 ms)")
	fs.StringVar(&o.Mode, "mode", "embedded", "relay storage: embedded (SQLite in a temp dir), postgres (a temporary database on -postgres-url, and Redis on -redis-url) or memory (storage/memory: no store cost, for comparison)")
	fs.StringVar(&o.PostgresURL, "postgres-url", os.Getenv("RELAY_TEST_POSTGRES_URL"), "Postgres server for -mode postgres, as a postgres:// URL whose user may create databases")
	fs.StringVar(&o.RedisURL, "redis-url", os.Getenv("RELAY_TEST_REDIS_URL"), "Redis server for -mode postgres (the limiter and key-change events, as with several instances); empty keeps them in process")
	fs.StringVar(&o.Phases, "phases", allPhases, "comma-separated phases to run")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&o.CPUProfile, "relay-cpuprofile", "", "write the relay process's CPU profile (whole run) to `file`")
	fs.BoolVar(&o.UpstreamH2C, "upstream-h2c", false, "bare proxy and relay speak HTTP/2 without TLS to the fake upstream (h2c), as they speak HTTP/2 to api.anthropic.com: streams share connections, so the relay holds one socket per stream instead of two")
	fs.StringVar(&o.BareProfile, "bare-cpuprofile", "", "write the bare proxy's CPU profile (whole run) to `file`, to compare with the relay's")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.Duration <= 0 || o.Concurrency < 1 || o.Rounds < 1 || o.Rate < 0 || o.Streams < 0 || o.Deltas < 1 || o.PromptBytes < 0 || o.EventDelay < time.Millisecond {
		return o, fmt.Errorf("bad flags: need -duration > 0, -concurrency ≥ 1, -rounds ≥ 1, -rate ≥ 0, -streams ≥ 0, -events ≥ 1, -prompt-bytes ≥ 0, -event-delay ≥ 1ms")
	}
	for _, p := range strings.Split(o.Phases, ",") {
		if !slices.Contains(strings.Split(allPhases, ","), p) {
			return o, fmt.Errorf("unknown phase %q (phases: %s)", p, allPhases)
		}
	}
	return o, nil
}

// report is everything one run measured.
type report struct {
	Machine machine      `json:"machine"`
	Options options      `json:"options"`
	Results []*result    `json:"results"`
	Open    []openResult `json:"open_streams,omitempty"`
	Checks  []check      `json:"checks"`
	// RelayRequests is every request sent to the relay (warm-ups
	// included); RelayRecords is the usage records it wrote, which should
	// be as many, and RelayRecordErrors those with an error status
	// (streams the open-streams phase hung up on count there, as 499).
	RelayRequests     int64 `json:"relay_requests_sent"`
	RelayRecords      int64 `json:"relay_usage_records"`
	RelayRecordErrors int64 `json:"relay_usage_record_errors"`
}

type machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	FileLimit  uint64 `json:"nofile"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute
	// averages: anything else running on the machine skews the numbers.
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

func run(args []string, stdout io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	nofile := raiseFileLimit()
	rep := &report{Options: o, Machine: describeMachine(nofile)}
	// Over HTTP/1.1 the relay holds a socket to the client and one to the
	// upstream for every stream; over h2c the upstream sockets are a few.
	// Leave room for its database and listeners.
	most := int(nofile-200) / 2
	if o.UpstreamH2C {
		most = int(nofile - 200)
	}
	if o.Streams > most {
		log.Printf("-streams %d is more than RLIMIT_NOFILE %d allows the relay; using %d", o.Streams, nofile, most)
		o.Streams, rep.Options.Streams = most, most
	}
	phases := strings.Split(o.Phases, ",")
	has := func(p string) bool { return slices.Contains(phases, p) }

	// A hard bound on the whole run, whatever happens.
	budget := time.Duration(len(phases)*3)*(o.Duration+time.Duration(o.Rounds)*(phaseWarmup(o.Duration)+5*time.Second)) + 3*openTimeout + 3*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	if err := errors.Join(os.Setenv(envPostgres, o.PostgresURL), os.Setenv(envRedis, o.RedisURL)); err != nil {
		return err
	}
	lg := newLoadgen(max(1024, o.Concurrency), o.Deltas, o.PromptBytes)
	if !o.JSON {
		fmt.Fprintf(stdout, "loadtest: %d CPUs (%s), %s, relay mode %s, %v per phase in %d rounds, concurrency %d, load average %s\n\n",
			rep.Machine.CPUs, rep.Machine.CPU, rep.Machine.Go, o.Mode, o.Duration, o.Rounds, o.Concurrency, rep.Machine.LoadBefore)
	}

	// The open-streams phase gets servers of its own, so that its RSS
	// baseline is not what earlier phases left, nor its heap what later
	// phases start from.
	if has("open") && o.Streams > 0 {
		f, err := startFleet(o, "", "")
		if err != nil {
			return err
		}
		defer f.stop(rep)
		f.warmUp(ctx, lg, o)
		if err := lg.setEventDelay(ctx, f.upURL, 10*time.Minute); err != nil {
			return err
		}
		for _, t := range f.targets {
			rep.Open = append(rep.Open, lg.openStreams(ctx, t, o.Streams, openTimeout))
			lg.tr.CloseIdleConnections()
		}
		f.stop(rep)
		runtime.GC()
		debug.FreeOSMemory()
	}

	if slices.ContainsFunc(phases, func(p string) bool { return p != "open" }) {
		f, err := startFleet(o, o.CPUProfile, o.BareProfile)
		if err != nil {
			return err
		}
		defer f.stop(rep)
		f.warmUp(ctx, lg, o)
		b := &bench{lg: lg, o: o, up: f.up, targets: f.targets}
		if has("latency") {
			rep.Results = append(rep.Results, b.closed(ctx, "latency", 1, false, 0)...)
		}
		if has("nonstream") {
			rep.Results = append(rep.Results, b.closed(ctx, "nonstream", o.Concurrency, false, 0)...)
		}
		if has("stream") {
			rep.Results = append(rep.Results, b.closed(ctx, "stream", o.Concurrency, true, 0)...)
		}
		if has("rate") && o.Rate > 0 {
			rep.Results = append(rep.Results, b.rate(ctx)...)
		}
		if has("paced") {
			if err := lg.setEventDelay(ctx, f.upURL, o.EventDelay); err != nil {
				return err
			}
			rep.Results = append(rep.Results, b.closed(ctx, "paced", o.Concurrency, true, o.EventDelay)...)
		}
		f.stop(rep)
	}
	rep.Machine.LoadAfter = loadAvg()
	rep.Checks = checks(rep)
	if o.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run cut short (%v): the numbers above are partial", context.Cause(ctx))
	}
	return nil
}

// fleet is one set of the three servers and the targets they make.
type fleet struct {
	up, bare, relay *child
	upURL           string
	targets         []*target
	stopped         bool
}

func startFleet(o options, cpuprofile, bareProfile string) (_ *fleet, err error) {
	f := &fleet{}
	defer func() {
		if err != nil {
			f.stop(nil)
		}
	}()
	if f.up, err = startChild("upstream", "serve-upstream", "-deltas", fmt.Sprint(o.Deltas)); err != nil {
		return nil, err
	}
	f.upURL = "http://" + f.up.addr
	bareArgs := []string{"-upstream", f.upURL}
	if o.UpstreamH2C {
		bareArgs = append(bareArgs, "-h2c")
	}
	if bareProfile != "" {
		bareArgs = append(bareArgs, "-cpuprofile", bareProfile)
	}
	if f.bare, err = startChild("bare", "serve-bare", bareArgs...); err != nil {
		return nil, err
	}
	args := []string{"-upstream", f.upURL, "-mode", o.Mode}
	if o.UpstreamH2C {
		args = append(args, "-h2c")
	}
	if cpuprofile != "" {
		args = append(args, "-cpuprofile", cpuprofile)
	}
	if f.relay, err = startChild("relay", "serve-relay", args...); err != nil {
		return nil, err
	}
	hdr := func(key string) http.Header {
		return http.Header{"Content-Type": {"application/json"}, "Anthropic-Version": {"2023-06-01"}, "X-Api-Key": {key}}
	}
	f.targets = []*target{
		{name: "direct", url: f.upURL + "/v1/messages", header: hdr(upstreamKey), proc: f.up},
		{name: "bare", url: "http://" + f.bare.addr + "/v1/messages", header: hdr(f.relay.key), proc: f.bare},
		{name: "relay", url: "http://" + f.relay.addr + "/v1/messages", header: hdr(f.relay.key), proc: f.relay},
	}
	return f, nil
}

// warmUp opens connections and fills the relay's key cache.
func (f *fleet) warmUp(ctx context.Context, lg *loadgen, o options) {
	for _, t := range f.targets {
		lg.closedLoop(ctx, o.Concurrency, phaseWarmup(o.Duration), func(w *worker, now time.Time) { w.message(ctx, t, now) })
		lg.closedLoop(ctx, o.Concurrency, phaseWarmup(o.Duration), func(w *worker, now time.Time) { w.stream(ctx, t, now, 0) })
	}
}

// stop stops the servers, once, adding to rep (if not nil) the requests
// sent to the relay and the usage records it wrote.
func (f *fleet) stop(rep *report) {
	if f.stopped {
		return
	}
	f.stopped = true
	if f.relay != nil {
		for _, l := range f.relay.stop(40 * time.Second) {
			var n, e int64
			if _, err := fmt.Sscanf(l, "records %d %d", &n, &e); err == nil && rep != nil {
				rep.RelayRecords += n
				rep.RelayRecordErrors += e
			}
		}
		if rep != nil {
			rep.RelayRequests += f.targets[2].sent.Load()
		}
	}
	for _, c := range []*child{f.bare, f.up} {
		if c != nil {
			c.stop(5 * time.Second)
		}
	}
}

// openTimeout bounds how long opening the streams of one target may take.
const openTimeout = 90 * time.Second

// phaseWarmup is the unmeasured run before each measured one.
func phaseWarmup(d time.Duration) time.Duration { return min(d/5, time.Second) }

func describeMachine(nofile uint64) machine {
	m := machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(), FileLimit: nofile, LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

// printReport writes the tables and the target checks.
func printReport(out io.Writer, rep *report) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	if len(rep.Open) > 0 {
		fmt.Fprintf(out, "open streams (%d at once, held open by the fake; RSS of the target's own process)\n", rep.Options.Streams)
		row("target", "opened", "errors", "open time", "idle RSS", "RSS open", "RSS/stream")
		for _, r := range rep.Open {
			row(r.Target, r.Opened, r.Errors, fmt.Sprintf("%.1fs", r.OpenTime), mib(r.IdleRSSKiB), mib(r.OpenRSSKiB), fmt.Sprintf("%.1f KiB", r.PerStreamKiB))
		}
		tw.Flush()
		fmt.Fprintln(out)
	}
	for i := 0; i < len(rep.Results); {
		phase := rep.Results[i].Phase
		j := i
		for j < len(rep.Results) && rep.Results[j].Phase == phase {
			j++
		}
		rs := rep.Results[i:j]
		i = j
		fmt.Fprintln(out, phaseTitle(rs[0], rep.Options))
		row("target", "req/s", "p50", "p99", "added p50", "added p99", "errors", "cpu/req", "upstream cpu/req", "RSS")
		for _, r := range rs {
			row(r.Target, fmt.Sprintf("%.0f", r.RPS), dur(r.Latency.P50), dur(r.Latency.P99), dur(r.AddedP50), dur(r.AddedP99),
				errCell(r), dur(r.CPUPerReq), dur(r.UpstreamCPUPerReq), mib(r.RSSKiB))
		}
		if phase == "paced" {
			tw.Flush()
			fmt.Fprintf(out, "  per event (the fake sleeps %v between events; early: < 0.6 × that after the previous; same read: read together with the previous):\n", rep.Options.EventDelay)
			row("target", "TTFB p50", "TTFB p99", "added TTFB", "gap p50", "gap p99", "added gap p50", "added gap p99", "events", "early", "same read")
			for _, r := range rs {
				row(r.Target, dur(r.TTFB.P50), dur(r.TTFB.P99), dur(r.AddedTTFB), dur(r.Gap.P50), dur(r.Gap.P99),
					dur(r.Gap.P50-rep.Options.EventDelay), dur(r.Gap.P99-rep.Options.EventDelay), r.Events, r.Early, r.Coalesced)
			}
		}
		tw.Flush()
		for _, r := range rs {
			if r.FirstError != "" {
				fmt.Fprintf(out, "  %s first error: %s\n", r.Target, r.FirstError)
			}
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "relay usage records: %d (%d with an error status, client hang-ups included) for %d requests sent to the relay\n",
		rep.RelayRecords, rep.RelayRecordErrors, rep.RelayRequests)
	fmt.Fprintf(out, "load average before %s, after %s (on %d CPUs)\n\n", rep.Machine.LoadBefore, rep.Machine.LoadAfter, rep.Machine.CPUs)
	fmt.Fprintln(out, "targets (relay vs bare proxy, same run)")
	for _, c := range rep.Checks {
		verdict := "MISS"
		if c.Pass {
			verdict = "ok  "
		}
		fmt.Fprintf(out, "  %s %-44s %s\n", verdict, c.Name, c.Value)
	}
}

func phaseTitle(r *result, o options) string {
	switch r.Phase {
	case "latency":
		return "non-streaming, 1 connection (latency)"
	case "nonstream":
		return fmt.Sprintf("non-streaming, %d connections", r.Concurrency)
	case "stream":
		return fmt.Sprintf("streaming, %d connections, %d events per stream, no delay (req/s = streams/s)", r.Concurrency, o.Deltas+6)
	case "rate":
		return fmt.Sprintf("non-streaming, fixed rate %.0f req/s (latency from when each request was due)", r.Rate)
	case "paced":
		return fmt.Sprintf("streaming, %d connections, %d events %v apart", r.Concurrency, o.Deltas+6, o.EventDelay)
	}
	return r.Phase
}

func errCell(r *result) string {
	if r.Dropped > 0 {
		return fmt.Sprintf("%d (+%d dropped)", r.Errors, r.Dropped)
	}
	return fmt.Sprint(r.Errors)
}

func dur(d time.Duration) string {
	switch a := max(d, -d); {
	case a == 0:
		return "0"
	case a < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
