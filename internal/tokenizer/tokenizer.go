// Package tokenizer estimates token counts without asking Anthropic, for
// the moments the relay has no exact count: reserving quota before a request
// is sent, and billing a stream that broke before its final usage arrived.
//
// Claude's tokenizer is not public. This package counts with OpenAI's
// cl100k_base encoding, the usual stand-in, which undercounts Claude by
// roughly 15–30 %; the fixed figures for images and documents are rougher
// still. Every number from this package is an estimate and must be recorded
// as one (usage.Record.Estimated), never passed off as an upstream count.
//
// The encoding is embedded in the binary (github.com/pkoukk/tiktoken-go-loader):
// this package never reaches the network.
package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// The loaded encoding is shared by every Counter of the process. This is
// the one global of the package, and it is there for two reasons:
//
//   - tiktoken-go chooses where its BPE files come from through a package
//     global (tiktoken.SetBpeLoader), and its default loader downloads them
//     from openaipublic.blob.core.windows.net on first use. We must replace
//     it before the first GetEncoding, and a global can only be set safely
//     once, so it is set under this sync.Once. tiktoken-go also caches the
//     loaded rank table process-wide, keyed by encoding name only, so
//     whichever loader runs first wins for the whole process anyway.
//   - The encoder (the rank table plus the maps and sorted table tiktoken
//     builds from it) takes about 10 MB of heap and 0.2 s to build. It is
//     immutable once built, so one copy serves all.
//
// The offline loader also embeds the other encodings tiktoken-go knows, so
// a host program that uses tiktoken-go itself keeps working offline.
var (
	loadOnce sync.Once
	loaded   *tiktoken.Tiktoken
	loadErr  error
)

func load() (*tiktoken.Tiktoken, error) {
	loadOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
		loaded, loadErr = tiktoken.GetEncoding(tiktoken.MODEL_CL100K_BASE)
		if loadErr != nil {
			loadErr = fmt.Errorf("tokenizer: loading cl100k_base: %w", loadErr)
		}
	})
	return loaded, loadErr
}

// Counter counts tokens with cl100k_base. It is safe for concurrent use.
type Counter struct {
	enc *tiktoken.Tiktoken
}

// New returns a Counter. The first call in a process loads the embedded
// encoding (about 0.2 s); later calls share it.
func New() (*Counter, error) {
	enc, err := load()
	if err != nil {
		return nil, err
	}
	return &Counter{enc: enc}, nil
}

// maxSegment bounds the text handed to the encoder at once. tiktoken-go's
// byte pair merge is quadratic in the length of one piece, and a piece can
// be as long as a run of letters or punctuation, so a long unbroken run
// (minified code, a base64 blob pasted as text) could otherwise take
// seconds. Cutting at line and word boundaries keeps the count the same as
// uncut text for ordinary prose and code, and within a token or two per cut
// otherwise.
const maxSegment = 1024

// Count returns the number of cl100k_base tokens of text. Special-token
// strings such as "<|endoftext|>" count as ordinary text.
func (c *Counter) Count(text string) int {
	n := 0
	for len(text) > 0 {
		k := len(text)
		if k > maxSegment {
			k = cutPoint(text)
		}
		n += len(c.enc.EncodeOrdinary(text[:k]))
		text = text[k:]
	}
	return n
}

// cutPoint returns where to cut s (longer than maxSegment): after the last
// newline or before the last space of the window, where cl100k starts a new
// piece anyway, or else at the last rune boundary of the window.
func cutPoint(s string) int {
	w := s[:maxSegment]
	if i := strings.LastIndexByte(w, '\n'); i >= maxSegment/2 {
		return i + 1
	}
	if i := strings.LastIndexByte(w, ' '); i >= maxSegment/2 {
		return i
	}
	for i := maxSegment; i > maxSegment-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return i
		}
	}
	return maxSegment // not UTF-8 anyway
}

// Texts longer than exactLimit are estimated from samples: counting is
// linear but slow (a few MB/s, less for pathological text), a request body
// may be 32 MB, and the estimate is only ever an estimate.
const (
	exactLimit     = 256 << 10
	sampleSegments = 64
)

// estimateText returns the token count of text, exact up to exactLimit
// bytes and sampled beyond.
func (c *Counter) estimateText(text string) int64 {
	return c.sampledCount(text, exactLimit, sampleSegments)
}

// sampledCount counts text exactly when it is at most limit bytes long.
// Otherwise it counts segments evenly spread slices of limit bytes in all,
// and scales their tokens per byte to the whole text.
func (c *Counter) sampledCount(text string, limit, segments int) int64 {
	if len(text) <= limit {
		return int64(c.Count(text))
	}
	segLen := limit / segments
	stride := len(text) / segments
	var tokens, sampled int
	for i := range segments {
		start := i * stride
		for start < len(text) && !utf8.RuneStart(text[start]) {
			start++
		}
		end := min(start+segLen, len(text))
		for end < len(text) && !utf8.RuneStart(text[end]) {
			end++
		}
		tokens += c.Count(text[start:end])
		sampled += end - start
	}
	if sampled == 0 {
		return EstimateBytes(int64(len(text)))
	}
	return int64(math.Ceil(float64(tokens) * float64(len(text)) / float64(sampled)))
}

// BytesPerToken is the ratio EstimateBytes uses: about 4 bytes of English
// text or code per cl100k token. Claude's tokenizer yields more tokens for
// the same text (see the package documentation).
const BytesPerToken = 4

// EstimateBytes estimates the tokens of n bytes of text, for when only a
// length is known, such as the output of a stream cut before its final
// usage (usage.StreamExtractor.DeltaBytes). It rounds up, so any text is at
// least one token.
func EstimateBytes(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n + BytesPerToken - 1) / BytesPerToken
}
