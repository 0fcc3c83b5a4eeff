package quota_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/storagetest"
)

func TestMemoryConformance(t *testing.T) {
	storagetest.TestLimiter(t, func(t *testing.T, cfg quota.Config) quota.Limiter { return quota.NewMemory(cfg) })
}

// benchLimits are a busy key's limits: every check runs, none refuses.
var benchLimits = quota.Limits{
	TokenLimit: 1 << 50, DailyTokens: 1 << 50, MonthlyCostMicros: 1 << 50,
	RPM: 1 << 40, TPM: 1 << 50, MaxConcurrent: 1 << 20,
}

func BenchmarkReserveSettle(b *testing.B) {
	ctx := b.Context()
	b.Run("one-key", func(b *testing.B) {
		m := quota.NewMemory(quota.Config{})
		req := quota.Request{KeyID: "bench-key", Limits: benchLimits, InputEstimate: 2000, MaxTokens: 64000, CostEstimateMicros: 70_000}
		b.ReportAllocs()
		for b.Loop() {
			r, err := m.Reserve(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Settle(ctx, r, quota.Actual{Input: 1800, Output: 900, CacheRead: 20_000, CostMicros: 20_000}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel-1000-keys", func(b *testing.B) {
		m := quota.NewMemory(quota.Config{})
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprintf("key-%04d", i)
		}
		var next atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				req := quota.Request{KeyID: keys[i%uint64(len(keys))], Limits: benchLimits, InputEstimate: 2000, MaxTokens: 64000, CostEstimateMicros: 70_000}
				r, err := m.Reserve(ctx, req)
				if err != nil {
					b.Error(err)
					return
				}
				if err := m.Settle(ctx, r, quota.Actual{Input: 1800, Output: 900, CostMicros: 20_000}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("parallel-one-key", func(b *testing.B) {
		m := quota.NewMemory(quota.Config{Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
		req := quota.Request{KeyID: "hot", Limits: benchLimits, InputEstimate: 2000, MaxTokens: 64000, CostEstimateMicros: 70_000}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := m.Reserve(ctx, req)
				if err != nil {
					b.Error(err)
					return
				}
				_ = m.Settle(ctx, r, quota.Actual{Input: 1800, Output: 900, CostMicros: 20_000})
			}
		})
	})
}
