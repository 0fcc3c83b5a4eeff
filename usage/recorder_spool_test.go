package usage

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testSpool(t testing.TB, dir string, maxBytes, segmentBytes int64) *spool {
	t.Helper()
	s, err := openSpool(spoolConfig{dir: dir, maxBytes: maxBytes, segmentBytes: segmentBytes, syncInterval: time.Millisecond, log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spoolRec(i int) Record {
	return Record{RequestID: fmt.Sprintf("r%06d", i), Time: time.Unix(int64(i), 0).UTC(), KeyID: "k", Status: 200, Usage: Usage{InputTokens: int64(i)}}
}

// drain replays everything left in s, checking the order, and returns how
// many records came back.
func drain(t testing.TB, s *spool, first int) int {
	t.Helper()
	n := 0
	for {
		recs, err := s.next(7)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return n
		}
		for _, r := range recs {
			if want := spoolRec(first + n).RequestID; r.RequestID != want {
				t.Fatalf("record %d is %s, want %s", n, r.RequestID, want)
			}
			n++
		}
		s.commit()
	}
}

func TestSpoolSegmentsAndBound(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 64 << 10
	s := testSpool(t, dir, maxBytes, 4<<10)
	n := 0
	for ; ; n++ {
		err := s.append([]Record{spoolRec(n)})
		if err == errSpoolFull {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if s.total > maxBytes || s.total < maxBytes-1024 {
		t.Errorf("full spool holds %d bytes, bound %d", s.total, maxBytes)
	}
	if got := s.records.Load(); got != int64(n) {
		t.Errorf("records = %d, want %d", got, n)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "usage-*.spool"))
	if len(segs) < 10 {
		t.Errorf("%d segments, want many of 4 KiB", len(segs))
	}
	if got := drain(t, s, 0); got != n {
		t.Errorf("replayed %d records, want %d", got, n)
	}
	if s.total != 0 || s.records.Load() != 0 {
		t.Errorf("after replay: total %d bytes, %d records", s.total, s.records.Load())
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "usage-*.spool")); len(segs) != 0 {
		t.Errorf("segments left: %v", segs)
	}
}

// TestSpoolReopen: progress within a segment is not persisted, so after a
// restart a partly replayed segment is replayed again from its start (the
// store skips the duplicates); appends after the restart follow it.
func TestSpoolReopen(t *testing.T) {
	dir := t.TempDir()
	s := testSpool(t, dir, 1<<20, 1<<20)
	for i := range 20 {
		if err := s.append([]Record{spoolRec(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if recs, err := s.next(5); err != nil || len(recs) != 5 {
		t.Fatalf("next = %d records, %v", len(recs), err)
	}
	s.commit()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s = testSpool(t, dir, 1<<20, 1<<20)
	defer s.close()
	if got := s.records.Load(); got != 20 {
		t.Fatalf("reopened spool counts %d records, want 20", got)
	}
	for i := 20; i < 30; i++ {
		if err := s.append([]Record{spoolRec(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := drain(t, s, 0); got != 30 {
		t.Errorf("replayed %d records, want 30", got)
	}
}

// FuzzSpoolSegment reads arbitrary bytes as a segment left by a previous
// run: it must not panic, must replay exactly the records it counted, and
// must remove the segment afterwards.
func FuzzSpoolSegment(f *testing.F) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var good []byte
	good = append(good, spoolMagic...)
	for i := range 3 {
		rec := spoolRec(i)
		good, _ = appendEntry(good, &rec, tab)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(bytes.Clone(good), 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add([]byte(spoolMagic + "\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Add([]byte(spoolMagic))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, spoolPrefix+"0000000000000001"+spoolSuffix)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := testSpool(t, dir, 1<<30, 1<<20)
		counted := s.records.Load()
		got := 0
		for {
			recs, err := s.next(2)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			got += len(recs)
			s.commit()
		}
		if int64(got) > counted || s.records.Load() != 0 {
			t.Fatalf("counted %d, replayed %d, left %d", counted, got, s.records.Load())
		}
		if err := s.close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("segment not removed after replay: %v", err)
		}
	})
}

// BenchmarkSpoolAppend measures Record's path when the queue is full: one
// record encoded and written to the spool (no fsync: that is grouped).
func BenchmarkSpoolAppend(b *testing.B) {
	s := testSpool(b, b.TempDir(), 1<<40, 64<<20)
	defer s.close()
	recs := []Record{spoolRec(1)}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.append(recs); err != nil {
			b.Fatal(err)
		}
	}
}
