package relay_test

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaystation/relay"
	"github.com/relaystation/relay/internal/testenv"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/quota"
	"github.com/relaystation/relay/storage/memory"
	"github.com/relaystation/relay/storage/postgres"
	redisstore "github.com/relaystation/relay/storage/redis"
	"github.com/relaystation/relay/upstream/upstreamtest"
	"github.com/relaystation/relay/usage"
)

// instance is one relay of a multi-instance deployment.
type instance struct {
	relay *relay.Relay
	srv   *httptest.Server
}

// TestSeveralInstances runs two relays on one Postgres and one Redis, as
// behind a load balancer, and drives them concurrently: a global RPM limit
// holds across both, one token budget holds within its bound, a key
// revoked through one is refused by the other within a second, and the
// usage totals equal the traffic of both.
func TestSeveralInstances(t *testing.T) {
	dsn := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	ctx := context.Background()
	store, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fake := upstreamtest.New(upstreamtest.Config{APIKey: upstreamKey, DontRecord: true})
	t.Cleanup(fake.Close)

	tiers := quota.Tiers{Default: "team", Tiers: map[string]quota.Limits{"team": {RPM: 30}}}
	secret := []byte("a shared secret of at least thirty-two bytes")
	var insts [2]instance
	for i := range insts {
		rc, err := redisstore.NewClient(redisURL)
		if err != nil {
			t.Fatal(err)
		}
		qcfg := quota.Config{Seed: relay.SeedFromUsage(store, 0)}
		inv := redisstore.NewInvalidator(rc, prefix, nil)
		rl, err := relay.New(relay.Config{
			UpstreamURL: fake.URL, UpstreamCredential: upstreamKey,
			Keys: store, Usage: store, Secret: secret, BcryptCost: 4,
			Tiers: tiers, Quota: qcfg,
			Limiter:      redisstore.NewLimiter(rc, qcfg, redisstore.LimiterOptions{Prefix: prefix + "quota:"}),
			KeyEvents:    inv,
			AdminRevoker: redisstore.NewRevoker(rc, prefix),
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(rl.Handler())
		insts[i] = instance{rl, srv}
		t.Cleanup(func() {
			srv.Close()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = rl.Close(cctx)
			_ = inv.Close(cctx)
			_ = rc.Close()
		})
	}

	_, rpmKey := mintOn(t, insts[0].relay, keys.CreateParams{Name: "rpm"})
	budgetID, budgetKey := mintOn(t, insts[1].relay, keys.CreateParams{Name: "budget", Limits: map[string]int64{"rpm": 0}, TokenLimit: 20_000})
	body := `{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`

	// 80 requests, 40 per instance, concurrently, against an RPM of 30.
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch a := postTo(t, insts[i%2].srv.URL, body, rpmKey); a.status {
			case 200:
				ok.Add(1)
			case 429:
				limited.Add(1)
			default:
				t.Errorf("status %d: %s", a.status, a.body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 30 || limited.Load() != 50 {
		t.Errorf("admitted %d, limited %d; want 30 admitted across both instances", ok.Load(), limited.Load())
	}

	// The token budget: 8 workers on both instances send until the key is
	// refused with 402; each request reserves ~1010 tokens (input estimate
	// plus max_tokens) and uses 110. Requests refused with 429 while others
	// hold the rest are retried, as clients do.
	var used atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				switch a := postTo(t, insts[(w+i)%2].srv.URL, body, budgetKey); a.status {
				case 200:
					used.Add(110)
				case 429:
					time.Sleep(2 * time.Millisecond)
				case 402:
					return
				default:
					t.Errorf("status %d: %s", a.status, a.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if u := used.Load(); u > 20_000 || u < 20_000-1100 {
		t.Errorf("budget key used %d of 20000 tokens", u)
	}

	// Revoke through instance 0; instance 1 refuses within a second.
	if a := postTo(t, insts[1].srv.URL, body, budgetKey); a.status != 402 {
		t.Fatalf("budget key: %d", a.status)
	}
	revokedID, revokedKey := mintOn(t, insts[0].relay, keys.CreateParams{Name: "soon revoked"})
	if a := postTo(t, insts[1].srv.URL, body, revokedKey); a.status != 200 {
		t.Fatalf("before revocation: %d %s", a.status, a.body)
	}
	if err := insts[0].relay.Keys().Delete(ctx, revokedID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	var late int64 // served before the notice arrived
	for {
		a := postTo(t, insts[1].srv.URL, body, revokedKey)
		if a.status == 401 {
			break
		}
		if a.status == 200 {
			late++
		}
		if time.Now().After(deadline) {
			t.Fatal("the other instance still accepts a deleted key after 1 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Totals equal the traffic of both instances.
	for _, in := range insts {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = in.relay.Close(cctx)
		cancel()
	}
	all, err := store.Totals(ctx, usage.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := ok.Load() + used.Load()/110 + 1 + late
	if all.Requests != want || all.Usage.Total() != want*110 {
		t.Errorf("stored %d requests, %d tokens; the instances served %d requests", all.Requests, all.Usage.Total(), want)
	}
	b, err := store.Totals(ctx, usage.Filter{KeyID: budgetID})
	if err != nil || b.Usage.Total() != used.Load() {
		t.Errorf("budget key totals %+v, want %d tokens", b, used.Load())
	}
}

// TestRevocationWithoutRedis: two relays sharing only a store see each
// other's revocations through the store within the recheck interval.
func TestRevocationWithoutRedis(t *testing.T) {
	fake := upstreamtest.New(upstreamtest.Config{})
	t.Cleanup(fake.Close)
	store := memory.New()
	var insts [2]instance
	for i := range insts {
		rl, err := relay.New(relay.Config{UpstreamURL: fake.URL, UpstreamCredential: "k", Keys: store, Usage: store, BcryptCost: 4})
		if err != nil {
			t.Fatal(err)
		}
		insts[i] = instance{rl, httptest.NewServer(rl.Handler())}
		t.Cleanup(func() { insts[i].srv.Close(); _ = rl.Close(context.Background()) })
	}
	id, key := mintOn(t, insts[0].relay, keys.CreateParams{Name: "x"})
	body := `{"model":"m","max_tokens":1}`
	if a := postTo(t, insts[1].srv.URL, body, key); a.status != 200 {
		t.Fatalf("%d", a.status)
	}
	if _, err := insts[0].relay.Keys().Update(context.Background(), id, func(k *keys.Key) error { k.Enabled = false; return nil }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for postTo(t, insts[1].srv.URL, body, key).status != 403 {
		if time.Now().After(deadline) {
			t.Fatal("a disabled key still works on the other instance")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mintOn(t *testing.T, rl *relay.Relay, p keys.CreateParams) (id, plaintext string) {
	t.Helper()
	k, plain, err := rl.Keys().Create(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID, plain
}

func postTo(t *testing.T, base, body, key string) answer {
	t.Helper()
	e := &env{t: t, srv: &httptest.Server{URL: base}}
	return e.post("/v1/messages", body, key)
}
