package usage

import (
	"context"
	"log/slog"
	"time"
)

// Pruner deletes old records; every Store is one.
type Pruner interface {
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// DefaultRetentionInterval is how often RunRetention prunes when given no
// interval.
const DefaultRetentionInterval = time.Hour

// RunRetention keeps the records of the last keep and no older ones: it
// prunes at once, then every every, until ctx is done, and returns then.
// Only records go; the daily rollup stays, so reports over whole days keep
// working for as long as the relay runs (see Store.Prune).
//
// keep <= 0 keeps records forever: RunRetention returns at once. every <= 0
// means DefaultRetentionInterval; nil now means time.Now; a nil log
// discards. A failed prune is logged and tried again at the next tick.
// Several relay instances may run it on one database: pruning is
// idempotent.
func RunRetention(ctx context.Context, store Pruner, keep, every time.Duration, now func() time.Time, log *slog.Logger) {
	if keep <= 0 {
		return
	}
	if every <= 0 {
		every = DefaultRetentionInterval
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		before := now().Add(-keep)
		n, err := store.Prune(ctx, before)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			log.LogAttrs(ctx, slog.LevelError, "usage retention: prune failed",
				slog.Time("before", before), slog.String("error", err.Error()))
		case n > 0:
			log.LogAttrs(ctx, slog.LevelInfo, "usage retention: pruned records",
				slog.Int64("records", n), slog.Time("before", DayOf(before)))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
