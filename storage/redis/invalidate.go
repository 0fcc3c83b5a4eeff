package redis

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// DefaultPrefix starts the names the Invalidator and the Revoker use when
// they are given an empty prefix.
const DefaultPrefix = "relay:"

// PublishTimeout bounds one asynchronous publish of Invalidator.OnChange.
const PublishTimeout = 2 * time.Second

// invalidateChannel is the Pub/Sub channel under the prefix.
const invalidateChannel = "keys:invalidate"

// Invalidator tells the other relay instances that share a Redis when a
// key changed, so that they drop it from their verified-key caches at once
// instead of at their next recheck (keys.Config.RecheckInterval, which
// stays the backstop: Pub/Sub delivers at most once, and not at all to an
// instance that is disconnected at the time).
//
// Messages go over Redis Pub/Sub on the channel <prefix>keys:invalidate;
// the payload is the key id. An instance receives its own messages too,
// which costs one cache lookup. It works with a single node, Sentinel and
// Cluster (classic Pub/Sub is broadcast to every Cluster node).
type Invalidator struct {
	client  goredis.UniversalClient
	channel string
	log     *slog.Logger

	mu      sync.Mutex
	closed  bool
	pending sync.WaitGroup // OnChange publishes in flight
}

// NewInvalidator returns an Invalidator on client. Every relay instance
// of one deployment must use the same prefix; empty means DefaultPrefix.
// A nil logger discards.
func NewInvalidator(client goredis.UniversalClient, prefix string, logger *slog.Logger) *Invalidator {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Invalidator{client: client, channel: prefix + invalidateChannel, log: logger}
}

// Channel is the Pub/Sub channel's name.
func (i *Invalidator) Channel() string { return i.channel }

// Publish tells every subscribed instance (this one included) that key id
// changed.
func (i *Invalidator) Publish(ctx context.Context, id string) error {
	return i.client.Publish(ctx, i.channel, id).Err()
}

// OnChange publishes id in the background, within PublishTimeout, and
// returns at once: it is meant for keys.Config.OnChange, which runs on the
// admin request that changed the key, and a slow or unreachable Redis must
// not hold that request. A failed publish is logged; the other instances
// then see the change at their next recheck. After Close, OnChange does
// nothing.
func (i *Invalidator) OnChange(id string) {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		i.log.Warn("key invalidation not published: invalidator closed", "key_id", id)
		return
	}
	i.pending.Add(1)
	i.mu.Unlock()
	go func() {
		defer i.pending.Done()
		ctx, cancel := context.WithTimeout(context.Background(), PublishTimeout)
		defer cancel()
		if err := i.Publish(ctx, id); err != nil {
			i.log.Warn("key invalidation not published; other instances see the change at their next recheck",
				"key_id", id, "error", err)
		}
	}()
}

// Close waits for the publishes OnChange started, or for ctx to end, and
// makes later OnChange calls no-ops. It does not stop Run (cancel Run's
// context) and does not close the client.
func (i *Invalidator) Close(ctx context.Context) error {
	i.mu.Lock()
	i.closed = true
	i.mu.Unlock()
	done := make(chan struct{})
	go func() { i.pending.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run subscribes to the channel and calls onInvalidate with the key id of
// every message, until ctx ends; it then returns nil. Give it
// keys.Service.Invalidate. Calls are sequential, from one goroutine, and
// should return quickly (messages wait in a buffer of 100 meanwhile, and
// are dropped after a minute).
//
// A Redis that is down when Run starts, or a connection that breaks
// later, is not an error: go-redis reconnects and subscribes again
// (connection loss is detected by a ping every few seconds). Messages
// published while an instance was not subscribed are lost, so after every
// subscription that follows a failure, onResync (if not nil) is called:
// the caller should then drop its whole verified-key cache, because any
// cached key may have changed meanwhile. With a nil onResync, a key changed
// during the outage is seen at its next recheck.
//
// Run may be called once per Invalidator at a time; instances each run
// their own.
func (i *Invalidator) Run(ctx context.Context, onInvalidate func(id string), onResync func()) error {
	if onInvalidate == nil {
		return errors.New("redis: Invalidator.Run needs onInvalidate")
	}
	if ctx.Err() != nil {
		return nil
	}
	ps := i.client.Subscribe(ctx, i.channel)
	// Subscribe drops its error (go-redis retries when receiving); a
	// Ping tells at once whether the subscription is live, so that the
	// first confirmation can be told from a resubscription.
	lost := ps.Ping(ctx) != nil
	if lost {
		i.log.Warn("key invalidation: Redis unreachable; subscribing when it is back", "channel", i.channel)
	}
	// Closing the PubSub closes msgs, which ends the loop below.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		_ = ps.Close()
	}()

	msgs := ps.ChannelWithSubscriptions()
	confirmed := false
	for m := range msgs {
		switch m := m.(type) {
		case *goredis.Message:
			if m.Channel == i.channel && m.Payload != "" {
				onInvalidate(m.Payload)
			}
		case *goredis.Subscription:
			if m.Kind != "subscribe" || m.Channel != i.channel {
				continue
			}
			if confirmed || lost {
				// go-redis subscribed again on a new connection:
				// whatever was published in between is lost.
				i.log.Info("key invalidation: subscribed again after a Redis outage; resynchronizing", "channel", i.channel)
				if onResync != nil {
					onResync()
				}
			}
			confirmed, lost = true, false
		}
	}
	return nil
}
