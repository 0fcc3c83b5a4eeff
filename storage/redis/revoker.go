package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/relaystation/relay/admin"
)

// Revoker is an admin.Revoker on Redis: a logout on one relay instance is
// honoured by every instance that shares the Redis and prefix. A revoked
// token is the key <prefix>admin:revoked:<jti>, which Redis deletes when
// the token would have expired anyway, so Redis holds only the tokens
// logged out within one token lifetime.
type Revoker struct {
	client goredis.UniversalClient
	prefix string
	now    func() time.Time
	revoke *goredis.Script
}

// luaRevoke sets KEYS[1] to expire in ARGV[1] ms unless it already lives
// longer: one round trip, and a repeated revocation never shortens one.
const luaRevoke = `
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('SET', KEYS[1], '1', 'PX', ttl)
end
return 1
`

var _ admin.Revoker = (*Revoker)(nil)

// NewRevoker returns a Revoker on client. Every relay instance of one
// deployment must use the same prefix; empty means DefaultPrefix.
func NewRevoker(client goredis.UniversalClient, prefix string) *Revoker {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Revoker{
		client: client,
		prefix: prefix + "admin:revoked:",
		now:    time.Now,
		revoke: goredis.NewScript(luaRevoke),
	}
}

// Revoke implements admin.Revoker. The entry's lifetime is until minus
// this instance's clock, handed to Redis as a relative expiry (PX), so
// that a clock difference between relay and Redis does not shorten it. A
// token whose until has passed is not stored. Revoking a token again keeps
// the later expiry.
func (r *Revoker) Revoke(ctx context.Context, jti string, until time.Time) error {
	ttl := until.Sub(r.now())
	if ttl < time.Millisecond {
		return nil
	}
	return r.revoke.Run(ctx, r.client, []string{r.prefix + jti}, ttl.Milliseconds()).Err()
}

// Revoked implements admin.Revoker.
func (r *Revoker) Revoked(ctx context.Context, jti string) (bool, error) {
	n, err := r.client.Exists(ctx, r.prefix+jti).Result()
	return n > 0, err
}
