// Package redis holds the relay's state that several relay instances
// share through one Redis (single node, Sentinel or Cluster), with
// go-redis v9:
//
//   - NewClient connects from a URL (redis://, rediss://, unix://,
//     redis+sentinel://, redis+cluster://) and never puts a password in an
//     error; RedactURL makes a URL fit for logs.
//   - Limiter is the quota.Limiter: RPM and TPM windows, token and cost
//     reservations with a TTL and concurrency leases, each operation one
//     atomic Lua script; calls made at the same time share a pipelined
//     round trip. Wrap it in quota.NewFailover to decide what happens
//     while Redis is unreachable.
//   - Invalidator tells the other instances over Pub/Sub that a key
//     changed, so their verified-key caches drop it at once
//     (keys.Config.OnChange on one side, keys.Service.Invalidate on the
//     other).
//   - Revoker is the admin.Revoker: an admin logout on one instance is
//     honoured by all.
//
// Every name the package writes starts with a prefix its caller chooses;
// give each deployment (and each test) its own.
//
// The limiter's scripts use the cmsgpack library that Redis (and Valkey
// and KeyDB) build into their Lua; a Redis-compatible server without it
// cannot run them.
package redis
