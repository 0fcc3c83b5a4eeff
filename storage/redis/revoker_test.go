package redis_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/relaystation/relay/admin"
	redisstore "github.com/relaystation/relay/storage/redis"
)

func TestRevoker(t *testing.T) {
	ctx := t.Context()
	clientA, prefix := connectTestRedis(t)
	clientB, _ := connectTestRedis(t)
	var a, b admin.Revoker = redisstore.NewRevoker(clientA, prefix), redisstore.NewRevoker(clientB, prefix)
	other := redisstore.NewRevoker(clientB, prefix+"other:")
	key := prefix + "admin:revoked:"

	got, err := b.Revoked(ctx, "jti-1")
	require.NoError(t, err)
	assert.False(t, got)

	// A logout on one instance is honoured by the others.
	require.NoError(t, a.Revoke(ctx, "jti-1", time.Now().Add(time.Hour)))
	got, err = b.Revoked(ctx, "jti-1")
	require.NoError(t, err)
	assert.True(t, got)
	got, err = b.Revoked(ctx, "jti-2")
	require.NoError(t, err)
	assert.False(t, got, "only the revoked token")
	got, err = other.Revoked(ctx, "jti-1")
	require.NoError(t, err)
	assert.False(t, got, "another prefix is another deployment")

	// The entry lives exactly until the token would expire.
	ttl := clientA.PTTL(ctx, key+"jti-1").Val()
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5)

	// Revoking again never shortens the entry; a later expiry extends it.
	require.NoError(t, b.Revoke(ctx, "jti-1", time.Now().Add(time.Minute)))
	assert.InDelta(t, time.Hour.Seconds(), clientA.PTTL(ctx, key+"jti-1").Val().Seconds(), 5)
	require.NoError(t, b.Revoke(ctx, "jti-1", time.Now().Add(2*time.Hour)))
	assert.InDelta(t, (2 * time.Hour).Seconds(), clientA.PTTL(ctx, key+"jti-1").Val().Seconds(), 5)

	// An expired token needs no entry.
	require.NoError(t, a.Revoke(ctx, "jti-old", time.Now().Add(-time.Second)))
	got, err = b.Revoked(ctx, "jti-old")
	require.NoError(t, err)
	assert.False(t, got)
	assert.Zero(t, clientA.Exists(ctx, key+"jti-old").Val())

	// Redis drops the entry when the token expires.
	require.NoError(t, a.Revoke(ctx, "jti-short", time.Now().Add(30*time.Millisecond)))
	got, err = b.Revoked(ctx, "jti-short")
	require.NoError(t, err)
	assert.True(t, got)
	require.Eventually(t, func() bool {
		got, err := b.Revoked(ctx, "jti-short")
		return err == nil && !got
	}, 5*time.Second, 5*time.Millisecond)
}

// TestRevokerUnreachable: a revocation that cannot be checked is an error
// (admin then refuses the request), not "not revoked".
func TestRevokerUnreachable(t *testing.T) {
	r := redisstore.NewRevoker(newInstanceClient(t, refusedURL(t)), "")
	got, err := r.Revoked(t.Context(), "jti-1")
	require.Error(t, err)
	assert.False(t, got)
	require.Error(t, r.Revoke(t.Context(), "jti-1", time.Now().Add(time.Hour)))
}
