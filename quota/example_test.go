package quota_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/relaystation/relay/quota"
)

func ExampleTiers_Resolve() {
	tiers := quota.Tiers{Default: "free", Tiers: map[string]quota.Limits{
		"free": {DailyTokens: 200_000, RPM: 10, MaxConcurrent: 2},
		"pro":  {MonthlyCostMicros: quota.Micros(50), RPM: 60},
	}}
	if err := tiers.Validate(); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", tiers.Resolve("pro", quota.Override{MaxConcurrent: new(int64(8))}))
	fmt.Printf("%+v\n", tiers.Resolve("", quota.Override{}))
	// Output:
	// {TokenLimit:0 DailyTokens:0 WeeklyTokens:0 MonthlyTokens:0 DailyCostMicros:0 WeeklyCostMicros:0 MonthlyCostMicros:50000000 RPM:60 TPM:0 MaxConcurrent:8}
	// {TokenLimit:0 DailyTokens:200000 WeeklyTokens:0 MonthlyTokens:0 DailyCostMicros:0 WeeklyCostMicros:0 MonthlyCostMicros:0 RPM:10 TPM:0 MaxConcurrent:2}
}

func ExampleMemory() {
	ctx := context.Background()
	lim := quota.NewMemory(quota.Config{
		Now: func() time.Time { return time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC) },
		// The relay seeds from its usage store; this key has used 90,000
		// tokens so far.
		Seed: func(_ context.Context, _ string, since time.Time) (int64, int64, error) { return 90_000, 0, nil },
	})
	limits := quota.Limits{TokenLimit: 100_000}

	// Claude Code asks for max_tokens 64000: the reservation is capped.
	res, err := lim.Reserve(ctx, quota.Request{KeyID: "key1", Limits: limits, InputEstimate: 2_000, MaxTokens: 64_000})
	if err != nil {
		panic(err)
	}
	fmt.Println("reserved:", res.Tokens, "remaining:", res.Standing.TokenLimit.Remaining)

	// The real usage was smaller: the difference comes back.
	_ = lim.Settle(ctx, res, quota.Actual{Input: 2_300, Output: 700})
	s, _ := lim.Standing(ctx, "key1", limits)
	fmt.Println("used:", s.TokenLimit.Used, "remaining:", s.TokenLimit.Remaining)

	// A reservation that cannot fit any more is a 402.
	_, err = lim.Reserve(ctx, quota.Request{KeyID: "key1", Limits: limits, InputEstimate: 5_000, MaxTokens: 4_096})
	fmt.Println(errors.Is(err, quota.ErrBudgetExceeded), quota.APIError(err).Status)
	fmt.Println(err)
	// Output:
	// reserved: 6096 remaining: 3904
	// used: 93000 remaining: 7000
	// true 402
	// quota: token_limit exhausted: this key has 7000 of its 100000 tokens left and this request reserves up to 9096 tokens (a lower max_tokens reserves less); it does not reset
}
