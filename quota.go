package relay

import (
	"context"
	"net/http"
	"strconv"
	"sync"

	"github.com/relaystation/relay/internal/apierror"
	"github.com/relaystation/relay/keys"
	"github.com/relaystation/relay/usage"
)

// tokenQuota enforces a key's lifetime token_limit in one process: a
// request is refused with 402 once the key's used tokens reach its limit.
// The used count is read from the usage store on a key's first request and
// kept current in memory as records are made, so the check costs a map
// lookup. It counts every token kind (input, output, cache creation, cache
// read). A request in flight may take a key past its limit by that
// request's own usage; reservations that bound this are the quota
// package's job.
type tokenQuota struct {
	store usage.Store
	mu    sync.Mutex
	used  map[string]*keyUse
}

type keyUse struct {
	once   sync.Once
	err    error
	mu     sync.Mutex
	tokens int64
}

func newTokenQuota(s usage.Store) *tokenQuota {
	return &tokenQuota{store: s, used: make(map[string]*keyUse)}
}

func (q *tokenQuota) entry(id string) *keyUse {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.used[id]
	if e == nil {
		e = &keyUse{}
		q.used[id] = e
	}
	return e
}

// load seeds a key's count from the store once.
func (q *tokenQuota) load(ctx context.Context, id string) (*keyUse, error) {
	e := q.entry(id)
	e.once.Do(func() {
		t, err := q.store.Totals(ctx, usage.Filter{KeyID: id})
		if err != nil {
			e.err = err
			return
		}
		e.mu.Lock()
		e.tokens += t.Usage.Total()
		e.mu.Unlock()
	})
	if e.err != nil {
		// Try again on the next request rather than remember a failure.
		q.mu.Lock()
		if q.used[id] == e {
			delete(q.used, id)
		}
		q.mu.Unlock()
		return nil, e.err
	}
	return e, nil
}

// Used returns a key's used tokens.
func (q *tokenQuota) Used(ctx context.Context, id string) (int64, error) {
	e, err := q.load(ctx, id)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tokens, nil
}

// check refuses a key whose token_limit is used up.
func (q *tokenQuota) check(ctx context.Context, k *keys.Key) *apierror.Error {
	if k.TokenLimit <= 0 {
		return nil
	}
	used, err := q.Used(ctx, k.ID)
	if err != nil {
		return apierror.New(http.StatusServiceUnavailable, "the usage store is unavailable; try again shortly")
	}
	if used >= k.TokenLimit {
		return apierror.New(http.StatusPaymentRequired, "token quota exhausted: this key has used "+strconv.FormatInt(used, 10)+" of its "+strconv.FormatInt(k.TokenLimit, 10)+" tokens")
	}
	return nil
}

// add counts a request's usage. Keys not loaded yet are skipped: their
// first load reads the store, which will include this record.
func (q *tokenQuota) add(id string, u usage.Usage) {
	if u.Total() == 0 {
		return
	}
	q.mu.Lock()
	e := q.used[id]
	q.mu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	e.tokens += u.Total()
	e.mu.Unlock()
}
