package quota_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/storagetest"
)

// A Failover is a Limiter like any other, whichever limiter serves it.
func TestFailoverConformance(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		storagetest.TestLimiter(t, func(t *testing.T, cfg quota.Config) quota.Limiter {
			return quota.NewFailover(quota.NewMemory(cfg), quota.NewMemory(cfg), quota.FailoverConfig{Now: cfg.Now})
		})
	})
	t.Run("degraded", func(t *testing.T) {
		storagetest.TestLimiter(t, func(t *testing.T, cfg quota.Config) quota.Limiter {
			return quota.NewFailover(down{quota.NewMemory(cfg)}, quota.NewMemory(cfg), quota.FailoverConfig{Now: cfg.Now})
		})
	})
}

// down is a primary that cannot reserve nor report a standing, so that
// every reservation is the fallback's. It finishes reservations like an
// empty limiter: the suite renews a made-up ID (without FallbackPrefix,
// hence the primary's) and expects ErrUnknownReservation.
type down struct{ empty quota.Limiter }

var errDown = errors.New("connection refused")

func (down) Reserve(context.Context, quota.Request) (quota.Reservation, error) {
	return quota.Reservation{}, errDown
}
func (d down) Settle(ctx context.Context, r quota.Reservation, a quota.Actual) error {
	return d.empty.Settle(ctx, r, a)
}
func (d down) Release(ctx context.Context, r quota.Reservation) error { return d.empty.Release(ctx, r) }
func (d down) Renew(ctx context.Context, r quota.Reservation) error   { return d.empty.Renew(ctx, r) }
func (down) Standing(context.Context, string, quota.Limits) (quota.Standing, error) {
	return quota.Standing{}, errDown
}

// A Failover over a Redis limiter that is down admits with the in-process
// fallback, and its reservation finds its way back there.
func ExampleNewFailover() {
	ctx := context.Background()
	var redisLimiter quota.Limiter = down{quota.NewMemory(quota.Config{})} // storage/redis.NewLimiter in the relay
	f := quota.NewFailover(redisLimiter, quota.NewMemory(quota.Config{}), quota.FailoverConfig{
		OnTransition: func(degraded bool) { fmt.Println("degraded:", degraded) },
	})
	r, err := f.Reserve(ctx, quota.Request{KeyID: "key_1", InputEstimate: 10, MaxTokens: 10})
	fmt.Println(strings.HasPrefix(r.ID, quota.FallbackPrefix), err)
	fmt.Println(f.Settle(ctx, r, quota.Actual{Input: 10, Output: 5}))
	// Output:
	// degraded: true
	// true <nil>
	// <nil>
}
