package tokenizer

import (
	"os"
	"strings"
	"testing"
)

func TestQuickEstimate(t *testing.T) {
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("testdata/request.json")
	if err != nil {
		t.Fatal(err)
	}
	exact := c.EstimateRequest(body)
	quick := QuickEstimate(body)
	// Quick is a reservation estimate, corrected by the real usage: it
	// must be in the tokenizer's range. This body is mostly tool schemas,
	// the JSON cl100k counts densest; on prose quick sits above cl100k.
	if quick < exact*6/10 || quick > exact*2 {
		t.Errorf("quick %d, tokenizer %d", quick, exact)
	}
	t.Logf("quick %d, tokenizer %d (%.2f×)", quick, exact, float64(quick)/float64(exact))

	image := `{"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` +
		strings.Repeat("QUJD", 100_000) + `"}},{"type":"text","text":"what is this?"}]}]}`
	if q := QuickEstimate([]byte(image)); q < ImageTokens || q > ImageTokens+100 {
		t.Errorf("an image costs %d, want about %d", q, ImageTokens)
	}
	pdf := strings.Replace(image, `"type":"image"`, `"type":"document"`, 1)
	if q := QuickEstimate([]byte(pdf)); q < DocumentTokens || q > DocumentTokens+100 {
		t.Errorf("a document costs %d, want about %d", q, DocumentTokens)
	}
	prose := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("The relay counts every token it forwards, cache tokens too. ", 200) + `"}]}`
	if q, e := QuickEstimate([]byte(prose)), c.EstimateRequest([]byte(prose)); q < e || q > e*2 {
		t.Errorf("prose: quick %d, tokenizer %d", q, e)
	}
	for _, bad := range []string{"", "{", `{"a":"`, `[[[[`, `"\`, strings.Repeat("{", 1000)} {
		_ = QuickEstimate([]byte(bad)) // must not panic
	}
}

func FuzzQuickEstimate(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi \"there\""}]}`))
	f.Add([]byte(`{"a":[1,{"b":"\\"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := QuickEstimate(b); n < 0 {
			t.Fatalf("negative estimate %d", n)
		}
	})
}

func BenchmarkQuickEstimate(b *testing.B) {
	body, err := os.ReadFile("testdata/request.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		QuickEstimate(body)
	}
}
