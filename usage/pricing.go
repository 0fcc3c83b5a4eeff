package usage

import (
	"sort"
	"strings"
)

// Price is what a model costs, in US dollars per million tokens.
type Price struct {
	Input        float64 `json:"input" yaml:"input"`
	Output       float64 `json:"output" yaml:"output"`
	CacheWrite5m float64 `json:"cache_write_5m" yaml:"cache_write_5m"`
	CacheWrite1h float64 `json:"cache_write_1h" yaml:"cache_write_1h"`
	CacheRead    float64 `json:"cache_read" yaml:"cache_read"`
}

// Cost prices u exactly: plain input, output, cache reads, and cache
// writes split by lifetime. Cache-creation tokens the upstream did not
// split are priced as 5-minute writes (the API's default lifetime).
func (p Price) Cost(u Usage) float64 {
	unsplit := u.CacheCreationInputTokens - u.CacheCreation5m - u.CacheCreation1h
	if unsplit < 0 {
		unsplit = 0
	}
	micro := float64(u.InputTokens)*p.Input +
		float64(u.OutputTokens)*p.Output +
		float64(u.CacheReadInputTokens)*p.CacheRead +
		float64(u.CacheCreation5m+unsplit)*p.CacheWrite5m +
		float64(u.CacheCreation1h)*p.CacheWrite1h
	return micro / 1e6
}

// standard builds a Price with Anthropic's cache multipliers: 5-minute
// writes 1.25×, 1-hour writes 2×, reads 0.1× the input price.
func standard(in, out float64) Price {
	return Price{Input: in, Output: out, CacheWrite5m: in * 1.25, CacheWrite1h: in * 2, CacheRead: in / 10}
}

// Pricing maps model ids to prices. A model id resolves to the entry whose
// name is its longest prefix, so dated ids (claude-sonnet-4-5-20250929)
// and suffixed aliases (-latest) find their family's price.
type Pricing struct {
	names  []string // longest first
	prices map[string]Price
	// Default prices models no entry matches.
	Default Price
}

// NewPricing returns a table of the given prices over def.
func NewPricing(prices map[string]Price, def Price) *Pricing {
	p := &Pricing{prices: make(map[string]Price, len(prices)), Default: def}
	for name, pr := range prices {
		p.prices[name] = pr
		p.names = append(p.names, name)
	}
	sort.Slice(p.names, func(i, j int) bool {
		if len(p.names[i]) != len(p.names[j]) {
			return len(p.names[i]) > len(p.names[j])
		}
		return p.names[i] < p.names[j]
	})
	return p
}

// DefaultPrices are Anthropic's list prices for Claude models as published
// in late 2026 (USD per million tokens). Override them in configuration
// when prices change or a new model appears.
func DefaultPrices() map[string]Price {
	return map[string]Price{
		"claude-opus-5":     standard(5, 25),
		"claude-opus-4-8":   standard(5, 25),
		"claude-opus-4-7":   standard(5, 25),
		"claude-opus-4-6":   standard(5, 25),
		"claude-opus-4-5":   standard(5, 25),
		"claude-opus-4-1":   standard(15, 75),
		"claude-opus-4":     standard(15, 75),
		"claude-3-opus":     standard(15, 75),
		"claude-sonnet-4-6": standard(3, 15),
		"claude-sonnet-4-5": standard(3, 15),
		"claude-sonnet-4":   standard(3, 15),
		"claude-3-7-sonnet": standard(3, 15),
		"claude-3-5-sonnet": standard(3, 15),
		"claude-haiku-4-5":  standard(1, 5),
		"claude-3-5-haiku":  standard(0.8, 4),
		"claude-3-haiku":    {Input: 0.25, Output: 1.25, CacheWrite5m: 0.30, CacheWrite1h: 0.50, CacheRead: 0.03},
	}
}

// DefaultPricing is DefaultPrices with unknown models priced as Sonnet, the
// usual middle of the range, so they are neither free nor overcharged.
func DefaultPricing() *Pricing { return NewPricing(DefaultPrices(), standard(3, 15)) }

// Lookup returns the price of model and whether an entry matched (false
// means Default was used; the caller may flag the record).
func (p *Pricing) Lookup(model string) (Price, bool) {
	model = strings.ToLower(model)
	if pr, ok := p.prices[model]; ok {
		return pr, true
	}
	for _, name := range p.names {
		if strings.HasPrefix(model, name) && (len(model) == len(name) || model[len(name)] == '-' || model[len(name)] == '@') {
			return p.prices[name], true
		}
	}
	return p.Default, false
}
