package tokenizer

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// networkAttempts counts every HTTP request the test binary tries to make.
var networkAttempts atomic.Int64

type noNetwork struct{}

func (noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	networkAttempts.Add(1)
	return nil, errors.New("tokenizer tests: network access attempted: " + r.URL.String())
}

// TestMain takes the network away before anything loads the encoding: the
// default tiktoken-go loader would fetch cl100k_base over HTTP (through
// http.DefaultTransport) unless it found it in its cache directory, which
// is pointed at an empty directory here. If New works, it worked offline.
func TestMain(m *testing.M) {
	http.DefaultTransport = noNetwork{}
	dir, err := os.MkdirTemp("", "tiktoken-cache")
	if err != nil {
		panic(err)
	}
	os.Setenv("TIKTOKEN_CACHE_DIR", dir)
	os.Setenv("DATA_GYM_CACHE_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newCounter(t testing.TB) *Counter {
	t.Helper()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOffline(t *testing.T) {
	c := newCounter(t)
	if n := networkAttempts.Load(); n != 0 {
		t.Fatalf("%d network attempts while loading", n)
	}
	entries, _ := os.ReadDir(os.Getenv("TIKTOKEN_CACHE_DIR"))
	if len(entries) != 0 {
		t.Errorf("the tiktoken cache directory was written: %v", entries)
	}
	// Known cl100k_base counts.
	for _, tt := range []struct {
		text string
		want int
	}{
		{"", 0},
		{"hello world", 2},
		{"tiktoken is great!", 6},
		{"<|endoftext|>", 7}, // special tokens count as text
	} {
		if got := c.Count(tt.text); got != tt.want {
			t.Errorf("Count(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
	c2 := newCounter(t)
	if c2.enc != c.enc {
		t.Error("a second Counter loaded the encoding again")
	}
}

// Cutting long text into segments must not change the count of ordinary
// prose and code, and must keep pathological runs fast.
func TestCountLongText(t *testing.T) {
	c := newCounter(t)
	var prose strings.Builder
	for i := 0; prose.Len() < 50_000; i++ {
		fmt.Fprintf(&prose, "Sentence %d: the relay counts every token, café naïve 日本語. ", i)
		if i%7 == 0 {
			prose.WriteString("\n\tfunc f(x int) error { return nil }\n")
		}
	}
	text := prose.String()
	if got, want := c.Count(text), len(c.enc.EncodeOrdinary(text)); got != want {
		t.Errorf("Count of %d bytes of prose = %d, uncut encoder says %d", len(text), got, want)
	}

	for _, s := range []string{
		strings.Repeat("a", 100_000),
		strings.Repeat("=", 100_000),
		strings.Repeat("日本", 20_000),
		strings.Repeat(" ", 100_000),
		strings.Repeat("ab1+/", 20_000),
	} {
		start := time.Now()
		n := c.Count(s)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Count of a %d-byte run of %q took %v", len(s), s[:3], d)
		}
		if n <= 0 || n > len(s) {
			t.Errorf("Count of a %d-byte run of %q = %d", len(s), s[:3], n)
		}
	}
}

// Past its limit, the sampled estimate stays close to the exact count.
func TestEstimateTextSampled(t *testing.T) {
	c := newCounter(t)
	var sb strings.Builder
	for i := 0; sb.Len() < 200<<10; i++ {
		fmt.Fprintf(&sb, "Line %d of the log: request %x took %d ms, status %d.\n", i, i*7919, i%977, 200+i%3)
		if i%5 == 0 {
			sb.WriteString("\tif err := h.store.Insert(ctx, rec); err != nil {\n\t\treturn fmt.Errorf(\"insert: %w\", err)\n\t}\n")
		}
	}
	text := sb.String()
	exact := int64(c.Count(text))
	const limit, segments = 32 << 10, 16
	got := c.sampledCount(text, limit, segments)
	diff := float64(got-exact) / float64(exact)
	if diff < -0.03 || diff > 0.03 {
		t.Errorf("sampled estimate %d, exact %d (%.1f%% off)", got, exact, 100*diff)
	}
	t.Logf("%d bytes: sampled %d, exact %d tokens (%+.2f%%)", len(text), got, exact, 100*diff)
	if got := c.sampledCount(text[:limit], limit, segments); got != int64(c.Count(text[:limit])) {
		t.Errorf("text at the limit not counted exactly")
	}
}

func TestCutPoint(t *testing.T) {
	long := strings.Repeat("x", 3*maxSegment)
	for _, tt := range []struct {
		name string
		s    string
		want int
	}{
		{"after newline", strings.Repeat("x", maxSegment*3/4) + "\n" + long, maxSegment*3/4 + 1},
		{"before space", strings.Repeat("x", maxSegment*3/4) + " " + long, maxSegment * 3 / 4},
		{"newline before space", strings.Repeat("x", maxSegment*3/4) + "\n" + strings.Repeat("x", 10) + " " + long, maxSegment*3/4 + 1},
		{"newline too early", strings.Repeat("x", 10) + "\n" + long, maxSegment},
		{"rune boundary", strings.Repeat("x", maxSegment-1) + "日" + long, maxSegment - 1},
	} {
		if got := cutPoint(tt.s); got != tt.want {
			t.Errorf("%s: cutPoint = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestEstimateBytes(t *testing.T) {
	for _, tt := range []struct{ n, want int64 }{{-1, 0}, {0, 0}, {1, 1}, {4, 1}, {5, 2}, {4000, 1000}} {
		if got := EstimateBytes(tt.n); got != tt.want {
			t.Errorf("EstimateBytes(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

func TestEstimateRequest(t *testing.T) {
	c := newCounter(t)
	const base = RequestOverhead + MessageOverhead
	tests := []struct {
		name string
		body string
		want int64
	}{
		{"string content",
			`{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hello world"}]}`,
			base + 2},
		{"text block",
			`{"messages":[{"role":"user","content":[{"type":"text","text":"hello world","cache_control":{"type":"ephemeral"}}]}]}`,
			base + 2},
		{"system string",
			`{"system":"hello world","messages":[{"role":"user","content":"hello world"}]}`,
			base + int64(c.Count("hello world\nhello world"))},
		{"system blocks",
			`{"system":[{"type":"text","text":"hello world"}],"messages":[{"role":"user","content":"hello world"}]}`,
			base + int64(c.Count("hello world\nhello world"))},
		{"image adds a fixed figure, its data is not counted",
			`{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + strings.Repeat("QUFB", 50_000) + `"}},{"type":"text","text":"hello world"}]}]}`,
			base + ImageTokens + 2},
		{"pdf document",
			`{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]}]}`,
			base + DocumentTokens},
		{"text document",
			`{"messages":[{"role":"user","content":[{"type":"document","title":"hello","source":{"type":"text","media_type":"text/plain","data":"world"}}]}]}`,
			base + int64(c.Count("hello\nworld"))},
		{"tool use and result",
			`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"Read","input":{ "file_path" : "/a" }}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"hello world"}]}]}]}`,
			RequestOverhead + 2*MessageOverhead + int64(c.Count(`Read`+"\n"+`{"file_path":"/a"}`+"\n"+`hello world`))},
		{"thinking",
			`{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"hello world","signature":"abc"},{"type":"redacted_thinking","data":"xyz"}]}]}`,
			base + 2},
		{"tools",
			`{"tools":[{"name":"get_weather","description":"Get the weather","input_schema":{"type":"object","properties":{}}}],"messages":[{"role":"user","content":"hello world"}]}`,
			base + ToolsOverhead + int64(c.Count("hello world\nget_weather\nGet the weather\n"+`{"type":"object","properties":{}}`))},
		{"unknown block counts by length",
			`{"messages":[{"role":"user","content":[{"type":"future_block","payload":"` + strings.Repeat("z", 400) + `"}]}]}`,
			base + EstimateBytes(int64(len(`{"type":"future_block","payload":""}`)+400))},
		{"not json", strings.Repeat("x", 400), 100},
		{"empty object", `{}`, RequestOverhead},
	}
	for _, tt := range tests {
		if got := c.EstimateRequest([]byte(tt.body)); got != tt.want {
			t.Errorf("%s: EstimateRequest = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestEstimateRequestRealistic runs a Claude Code style request (system
// blocks, tool definitions, thinking, tool use, a tool result and an image).
func TestEstimateRequestRealistic(t *testing.T) {
	c := newCounter(t)
	body, err := os.ReadFile("testdata/request.json")
	if err != nil {
		t.Fatal(err)
	}
	got := c.EstimateRequest(body)
	// The text the model reads (system, tool definitions, messages) is
	// about 3 KB of the 4.8 KB body: some 750 tokens at cl100k's ~4 bytes
	// per token. The image and the tool-use prompt add their fixed figures.
	const fixed = ImageTokens + ToolsOverhead + RequestOverhead + 5*MessageOverhead
	if got < fixed+600 || got > fixed+950 {
		t.Errorf("EstimateRequest = %d, want about %d", got, fixed+750)
	}
	t.Logf("estimate %d tokens for a %d-byte body", got, len(body))
}

func TestConcurrentUse(t *testing.T) {
	c := newCounter(t)
	body, err := os.ReadFile("testdata/request.json")
	if err != nil {
		t.Fatal(err)
	}
	want := c.EstimateRequest(body)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if got := c.EstimateRequest(body); got != want {
					t.Errorf("concurrent EstimateRequest = %d, want %d", got, want)
					return
				}
				if got := c.Count("hello world"); got != 2 {
					t.Errorf("concurrent Count = %d", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// claudeCodeBody builds a Messages request of about size bytes in the
// shape Claude Code sends: the realistic request with a long conversation.
func claudeCodeBody(tb testing.TB, size int) []byte {
	body, err := os.ReadFile("testdata/request.json")
	if err != nil {
		tb.Fatal(err)
	}
	s := string(body)
	i := strings.LastIndex(s, "]")
	i = strings.LastIndex(s[:i], "}") + 1
	var sb strings.Builder
	sb.WriteString(s[:i])
	for n := 0; sb.Len() < size; n++ {
		fmt.Fprintf(&sb, `,{"role":"assistant","content":[{"type":"text","text":"Step %d: I will read the next file."},{"type":"tool_use","id":"toolu_%d","name":"Read","input":{"file_path":"/home/user/project/pkg/file%d.go"}}]}`, n, n, n)
		fmt.Fprintf(&sb, `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_%d","content":"package pkg\n\n// Handler serves the relay's admin API.\nfunc (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {\n\tif r.Method != http.MethodGet {\n\t\thttp.Error(w, \"method not allowed\", http.StatusMethodNotAllowed)\n\t\treturn\n\t}\n\tfmt.Fprintf(w, \"%%d records\\n\", h.count)\n}\n"}]}`, n)
	}
	sb.WriteString(s[i:])
	return []byte(sb.String())
}

func BenchmarkEstimateRequest(b *testing.B) {
	c := newCounter(b)
	for _, size := range []int{4 << 10, 70 << 10, 1 << 20} {
		body := claudeCodeBody(b, size)
		b.Run(fmt.Sprintf("%dKB", len(body)>>10), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var n int64
			for b.Loop() {
				n = c.EstimateRequest(body)
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

func BenchmarkCount(b *testing.B) {
	c := newCounter(b)
	text := strings.Repeat("The relay counts every token of every request, and bills it. ", 200)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		c.Count(text)
	}
}
