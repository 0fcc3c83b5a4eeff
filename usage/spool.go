package usage

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The spool is where records go when the store cannot take them: a
// directory of append-only segment files, written in order and replayed in
// the same order once the store is back.
//
// On-disk format. A segment is named usage-<16 hex digits>.spool, the
// digits being its sequence number (segments are replayed in ascending
// order). It starts with the 8-byte header spoolMagic, then holds entries
// back to back, each
//
//	length  uint32, little endian: bytes of payload (1 ..= spoolMaxEntry)
//	crc     uint32, little endian: CRC-32C (Castagnoli) of payload
//	payload the Record as JSON (encoding/json, the Record's json tags)
//
// A segment is only ever appended to by the process that created it; after
// a restart the existing segments are read-only and new records go to a new
// segment. So a write torn by a crash can only be at the end of a segment:
// the reader stops at the first entry that is short, has an impossible
// length or a wrong CRC, and ignores the rest of that segment (logging how
// many bytes it skipped). Replay progress within a segment is kept in
// memory only: after a restart a partly replayed segment is replayed from
// its start, and the store skips what it already has. The directory also
// holds a LOCK file, locked
// while a Recorder uses the spool (where the platform has flock), so two
// Recorders never share one spool.
const (
	spoolMagic     = "RLYUSG\x00\x01" // name, format version 1
	spoolEntryHead = 8                // length + crc
	spoolMaxEntry  = 16 << 20         // a larger length is corruption, not a record
	spoolPrefix    = "usage-"
	spoolSuffix    = ".spool"
	spoolLockName  = "LOCK"
	// spoolGroupBytes is the most unsynced bytes a group holds before it is
	// synced without waiting for the sync interval.
	spoolGroupBytes = 1 << 20
)

var (
	errSpoolFull   = errors.New("usage: spool full")
	errSpoolClosed = errors.New("usage: spool closed")
	// errSpoolCorrupt marks an entry that cannot be what was written: a
	// torn tail after a crash, or damage.
	errSpoolCorrupt = errors.New("usage: spool entry torn or corrupt")
)

type spoolConfig struct {
	dir          string
	maxBytes     int64
	segmentBytes int64
	syncInterval time.Duration
	log          *slog.Logger
}

// segment is a sealed segment file: complete, read-only, awaiting replay.
type segment struct {
	seq     uint64
	size    int64 // bytes on disk, counted against maxBytes until removed
	records int64 // valid entries in it
}

// spool is safe for concurrent appends; next and commit (the replay side)
// are called by one goroutine only, the Recorder's writer.
type spool struct {
	cfg   spoolConfig
	crc   *crc32.Table
	lock  *os.File // held LOCK file
	dirty chan struct{}
	full  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	// mu guards the segment list and the active segment. No fsync happens
	// under it (but at close), so appends never wait on the disk's sync.
	mu            sync.Mutex
	closed        bool
	sealed        []segment // oldest first; sealed[0] is the one being replayed
	active        *os.File  // nil until the next append creates it
	activeSeq     uint64    // sequence number of active, or of the next segment when active is nil
	activeSize    int64
	activeRecords int64
	total         int64 // bytes of every segment file, sealed and active
	unsynced      int64 // bytes written to active since its last sync

	// syncMu is held during a group sync, so that finishing a segment
	// sealed meanwhile (which closes its file) waits for the sync. Lock
	// order: mu, then syncMu.
	syncMu sync.Mutex

	records  atomic.Int64 // entries on disk not yet replayed (RecorderStats.Spooled)
	appended atomic.Int64 // entries ever appended (RecorderStats.SpooledTotal)

	// Replay state, owned by the writer goroutine. The segment being
	// replayed is sealed[0]: rd reads it; rdOff and rdRead are the offset
	// and count of valid entries read so far, cOff and cRead the same at
	// the last commit (of segment cSeq), where a reopened reader resumes.
	rd      *os.File
	rdBuf   *bufio.Reader
	rdSeg   segment
	rdOff   int64
	rdRead  int64
	rdDone  bool // rdSeg has nothing more to read
	cSeq    uint64
	cOff    int64
	cRead   int64
	payload []byte
}

// openSpool opens (creating if needed) the spool in cfg.dir, takes its
// lock and takes stock of the segments a previous process left: they are
// sealed, validated and counted, and will be replayed first.
func openSpool(cfg spoolConfig) (*spool, error) {
	if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
		return nil, fmt.Errorf("usage: spool: %w", err)
	}
	lock, err := lockSpool(filepath.Join(cfg.dir, spoolLockName))
	if err != nil {
		return nil, fmt.Errorf("usage: spool %s: %w", cfg.dir, err)
	}
	s := &spool{
		cfg: cfg, crc: crc32.MakeTable(crc32.Castagnoli), lock: lock,
		dirty: make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if err := s.load(); err != nil {
		unlockSpool(lock)
		return nil, fmt.Errorf("usage: spool %s: %w", cfg.dir, err)
	}
	go s.syncLoop()
	return s, nil
}

// load finds the segments in the directory, in sequence order, and counts
// their valid entries. Segments without any are removed.
func (s *spool) load() error {
	ents, err := os.ReadDir(s.cfg.dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range ents {
		if seq, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		s.activeSeq = seq + 1
		path := s.segmentPath(seq)
		n, valid, size, err := s.scan(path)
		if err != nil {
			return err
		}
		if valid < size {
			s.cfg.log.Warn("usage spool: ignoring torn or corrupt tail of segment (a crash during a write leaves one)",
				"segment", path, "ignored_bytes", size-valid, "records", n)
		}
		if n == 0 {
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		s.sealed = append(s.sealed, segment{seq: seq, size: size, records: n})
		s.total += size
		s.records.Add(n)
	}
	if s.activeSeq == 0 {
		s.activeSeq = 1
	}
	if n := s.records.Load(); n > 0 {
		s.cfg.log.Info("usage spool: records from a previous run will be replayed", "records", n, "segments", len(s.sealed), "bytes", s.total)
	}
	return nil
}

// scan counts the valid entries of a segment file and the length of its
// valid prefix.
func (s *spool) scan(path string) (records, valid, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	if !readHeader(br) {
		return 0, 0, st.Size(), nil
	}
	valid = int64(len(spoolMagic))
	var buf []byte
	for {
		buf, err = readEntry(br, buf, s.crc)
		if err == io.EOF || errors.Is(err, errSpoolCorrupt) {
			return records, valid, st.Size(), nil
		}
		if err != nil {
			return 0, 0, 0, err
		}
		records++
		valid += int64(spoolEntryHead + len(buf))
	}
}

func readHeader(br *bufio.Reader) bool {
	var h [len(spoolMagic)]byte
	_, err := io.ReadFull(br, h[:])
	return err == nil && string(h[:]) == spoolMagic
}

// readEntry reads one entry's payload into buf. It returns io.EOF at a
// clean end, an error wrapping errSpoolCorrupt for a torn or damaged entry,
// and any other read error as is.
func readEntry(br *bufio.Reader, buf []byte, tab *crc32.Table) ([]byte, error) {
	var h [spoolEntryHead]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return buf, fmt.Errorf("%w: short entry header", errSpoolCorrupt)
		}
		return buf, err // io.EOF: clean end
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	sum := binary.LittleEndian.Uint32(h[4:8])
	// Zero is never a valid length (a payload is a JSON object), and a
	// zero-filled tail, which some file systems leave after a crash, would
	// otherwise pass: the CRC of nothing is zero.
	if n == 0 || n > spoolMaxEntry {
		return buf, fmt.Errorf("%w: entry length %d", errSpoolCorrupt, n)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(br, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return buf, fmt.Errorf("%w: short entry", errSpoolCorrupt)
		}
		return buf, err
	}
	if crc32.Checksum(buf, tab) != sum {
		return buf, fmt.Errorf("%w: checksum mismatch", errSpoolCorrupt)
	}
	return buf, nil
}

// appendEntry encodes rec as one entry at the end of dst.
func appendEntry(dst []byte, rec *Record, tab *crc32.Table) ([]byte, error) {
	payload, err := json.Marshal(rec)
	if err != nil {
		return dst, err
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, tab))
	return append(dst, payload...), nil
}

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, spoolPrefix)
	if !ok {
		return 0, false
	}
	if hex, ok = strings.CutSuffix(hex, spoolSuffix); !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

func (s *spool) segmentPath(seq uint64) string {
	return filepath.Join(s.cfg.dir, fmt.Sprintf("%s%016x%s", spoolPrefix, seq, spoolSuffix))
}

// append writes recs to the spool as one write. Either all of them are
// appended or none (errSpoolFull when they would take the spool past its
// size bound). They are durable after the next group sync, at most
// syncInterval later. No fsync happens under mu: the one of a segment
// sealed here, and the directory's after a segment is created, happen
// after it is released, so that other appends never wait on the disk.
func (s *spool) append(recs []Record) error {
	var buf []byte
	for i := range recs {
		var err error
		if buf, err = appendEntry(buf, &recs[i], s.crc); err != nil {
			return fmt.Errorf("usage: spool: encode record %s: %w", recs[i].RequestID, err)
		}
	}
	s.mu.Lock()
	sealed, created, err := s.appendLocked(buf, int64(len(recs)))
	s.mu.Unlock()
	s.finishSegment(sealed)
	if created {
		syncDir(s.cfg.dir)
	}
	return err
}

func (s *spool) appendLocked(buf []byte, n int64) (sealed *os.File, created bool, err error) {
	if s.closed {
		return nil, false, errSpoolClosed
	}
	size := int64(len(buf))
	if s.active != nil && s.activeSize > int64(len(spoolMagic)) && s.activeSize+size > s.cfg.segmentBytes {
		sealed = s.detachLocked()
	}
	need := size
	if s.active == nil {
		need += int64(len(spoolMagic))
	}
	if s.total+need > s.cfg.maxBytes {
		return sealed, false, errSpoolFull
	}
	if s.active == nil {
		if err := s.createLocked(); err != nil {
			return sealed, false, err
		}
		created = true
	}
	if w, err := s.active.Write(buf); err != nil {
		// Leave no partial entry behind: later appends would follow it
		// and be unreadable. If that fails too, seal the segment: its
		// reader stops at the partial entry, and nothing follows it.
		if w > 0 {
			if terr := s.active.Truncate(s.activeSize); terr != nil {
				s.activeSize += int64(w)
				s.total += int64(w)
				if sealed == nil {
					sealed = s.detachLocked()
				} else {
					// The active segment was created by this call, under
					// mu all along: no group sync can be using it.
					s.finishLocked(s.detachLocked())
				}
			}
		}
		return sealed, created, fmt.Errorf("usage: spool: write: %w", err)
	}
	s.activeSize += size
	s.activeRecords += n
	s.total += size
	wasClean := s.unsynced == 0
	s.unsynced += size
	s.records.Add(n)
	s.appended.Add(n)
	if wasClean {
		signal(s.dirty)
	}
	if s.unsynced >= spoolGroupBytes {
		signal(s.full)
	}
	return sealed, created, nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// createLocked starts a new active segment. The caller syncs the directory
// (syncDir) once mu is released, so that the new name survives a crash
// along with the data synced into it.
func (s *spool) createLocked() error {
	path := s.segmentPath(s.activeSeq)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("usage: spool: %w", err)
	}
	if _, err := f.WriteString(spoolMagic); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("usage: spool: %w", err)
	}
	s.active = f
	s.activeSize = int64(len(spoolMagic))
	s.activeRecords = 0
	s.total += s.activeSize
	s.unsynced = s.activeSize
	return nil
}

// syncDir makes a directory's entries durable; best effort (some platforms
// cannot sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// detachLocked seals the active segment: it joins the segments waiting for
// replay, and the next append starts a new one. It returns the file, which
// the caller must pass to finishSegment once mu is released (nil when
// there is nothing to finish).
func (s *spool) detachLocked() *os.File {
	f := s.active
	if f == nil {
		return nil
	}
	if s.activeRecords > 0 {
		s.sealed = append(s.sealed, segment{seq: s.activeSeq, size: s.activeSize, records: s.activeRecords})
	} else { // a header and nothing else
		f.Close()
		os.Remove(s.segmentPath(s.activeSeq))
		s.total -= s.activeSize
		f = nil
	}
	s.active = nil
	s.activeSeq++
	s.activeSize, s.activeRecords, s.unsynced = 0, 0, 0
	return f
}

// finishSegment syncs and closes a sealed segment's file. syncMu orders it
// after a group sync of the same file that may be in progress.
func (s *spool) finishSegment(f *os.File) {
	if f == nil {
		return
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.finishLocked(f)
}

// finishLocked is finishSegment for a caller holding syncMu, or holding mu
// when no group sync can be using f.
func (s *spool) finishLocked(f *os.File) {
	if f == nil {
		return
	}
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.cfg.log.Error("usage spool: sync at seal failed; records written since the last sync may be lost on a crash", "segment", f.Name(), "error", err)
	}
}

// syncLoop is the group commit: after the first unsynced append it waits
// syncInterval (or until a group's worth of bytes is waiting) and syncs
// everything written meanwhile with one fsync. An idle spool never wakes.
func (s *spool) syncLoop() {
	defer close(s.done)
	t := time.NewTimer(s.cfg.syncInterval)
	t.Stop()
	for {
		select {
		case <-s.dirty:
		case <-s.stop:
			return
		}
		t.Reset(s.cfg.syncInterval)
		select {
		case <-t.C:
		case <-s.full:
			t.Stop()
		case <-s.stop:
			t.Stop()
			return
		}
		s.sync()
	}
}

// sync fsyncs the active segment if anything was written since the last
// sync. Appends go on meanwhile: mu is released before the fsync.
func (s *spool) sync() {
	s.mu.Lock()
	if s.active == nil || s.unsynced == 0 {
		s.mu.Unlock()
		return
	}
	f := s.active
	s.unsynced = 0
	s.syncMu.Lock()
	s.mu.Unlock()
	err := f.Sync()
	s.syncMu.Unlock()
	if err != nil {
		s.cfg.log.Error("usage spool: sync failed; records written since the last sync may be lost on a crash", "error", err)
	}
}

// next returns up to max records from the oldest segment, in the order they
// were appended, or none when nothing waits. A batch never spans segments.
// The records count as replayed only after commit; a caller that could not
// store them keeps them and retries, without calling next in between.
func (s *spool) next(max int) ([]Record, error) {
	for {
		if s.rd == nil {
			ok, err := s.openNext()
			if !ok || err != nil {
				return nil, err
			}
		}
		var recs []Record
		for !s.rdDone && len(recs) < max {
			var err error
			s.payload, err = readEntry(s.rdBuf, s.payload, s.crc)
			switch {
			case err == io.EOF:
				s.rdDone = true
				continue
			case errors.Is(err, errSpoolCorrupt):
				s.cfg.log.Warn("usage spool: ignoring the rest of a segment after a torn or corrupt entry",
					"segment", s.segmentPath(s.rdSeg.seq), "offset", s.rdOff, "error", err)
				s.rdDone = true
				continue
			case err != nil:
				// A read error: drop what this call read; a later call
				// reopens the segment at the last commit and reads again.
				s.closeReader()
				return nil, fmt.Errorf("usage: spool: read %s: %w", s.segmentPath(s.rdSeg.seq), err)
			}
			s.rdRead++
			s.rdOff += int64(spoolEntryHead + len(s.payload))
			var rec Record
			if err := json.Unmarshal(s.payload, &rec); err != nil {
				// The CRC matched, so this is what was written, in a form
				// this version cannot read: nothing to retry.
				s.cfg.log.Error("usage spool: record lost: cannot decode", "segment", s.segmentPath(s.rdSeg.seq), "error", err)
				continue
			}
			recs = append(recs, rec)
		}
		if !s.rdDone {
			// At the end already? Then commit removes the segment: no
			// later call may come to find out (nothing else waits).
			if _, err := s.rdBuf.Peek(1); err == io.EOF {
				s.rdDone = true
			}
		}
		if len(recs) > 0 {
			return recs, nil
		}
		s.removeHead()
	}
}

// openNext opens the oldest sealed segment for replay, at the last commit
// if it was being replayed already, sealing the active segment first when
// it is the only one with records.
func (s *spool) openNext() (bool, error) {
	s.mu.Lock()
	var sealed *os.File
	if len(s.sealed) == 0 && s.activeRecords > 0 {
		sealed = s.detachLocked()
	}
	if len(s.sealed) == 0 {
		s.mu.Unlock()
		return false, nil
	}
	seg := s.sealed[0]
	s.mu.Unlock()
	s.finishSegment(sealed)

	path := s.segmentPath(seg.seq)
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("usage: spool: %w", err)
	}
	if s.cSeq != seg.seq {
		s.cSeq, s.cOff, s.cRead = seg.seq, 0, 0
	}
	s.rd, s.rdSeg, s.rdDone = f, seg, false
	s.rdBuf = bufio.NewReaderSize(f, 64<<10)
	if s.cOff > 0 {
		if _, err := f.Seek(s.cOff, io.SeekStart); err != nil {
			s.closeReader()
			return false, fmt.Errorf("usage: spool: %w", err)
		}
	} else if !readHeader(s.rdBuf) {
		s.cfg.log.Warn("usage spool: segment without a valid header; ignoring it", "segment", path)
		s.rdDone = true
	} else {
		s.cOff = int64(len(spoolMagic))
	}
	s.rdOff, s.rdRead = s.cOff, s.cRead
	return true, nil
}

// commit records that the records returned by the last next are stored.
// A segment is removed once all its records are.
func (s *spool) commit() {
	s.records.Add(-(s.rdRead - s.cRead))
	s.cOff, s.cRead = s.rdOff, s.rdRead
	if s.rdDone {
		s.removeHead()
	}
}

// removeHead deletes the segment being replayed, every readable record of
// which is stored (or was undecodable, which was logged).
func (s *spool) removeHead() {
	seg := s.rdSeg
	s.closeReader()
	if lost := seg.records - s.cRead; lost > 0 {
		if damaged := seg.records - s.rdRead; damaged > 0 {
			// Counted as valid when written or scanned, unreadable now.
			s.cfg.log.Error("usage spool: records lost: segment damaged since it was written", "segment", s.segmentPath(seg.seq), "records", damaged)
		}
		s.records.Add(-lost)
	}
	s.cSeq, s.cOff, s.cRead = 0, 0, 0
	path := s.segmentPath(seg.seq)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		// Left behind, it is replayed again after a restart: harmless, the
		// store being idempotent, but say so.
		s.cfg.log.Error("usage spool: cannot remove replayed segment; it will be replayed again after a restart", "segment", path, "error", err)
	}
	s.mu.Lock()
	if len(s.sealed) > 0 && s.sealed[0].seq == seg.seq {
		s.sealed = s.sealed[1:]
		s.total -= seg.size
	}
	s.mu.Unlock()
}

// closeReader closes the segment being read. Progress up to the last
// commit is kept (cSeq, cOff, cRead).
func (s *spool) closeReader() {
	if s.rd != nil {
		s.rd.Close()
	}
	s.rd, s.rdBuf, s.rdDone = nil, nil, false
}

// close syncs and closes everything; records not replayed stay on disk for
// the next run. Appends fail with errSpoolClosed afterwards.
func (s *spool) close() error {
	close(s.stop)
	<-s.done
	s.closeReader()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.active != nil {
		if s.activeRecords == 0 {
			s.active.Close()
			os.Remove(s.segmentPath(s.activeSeq))
		} else {
			err = s.active.Sync()
			if cerr := s.active.Close(); err == nil {
				err = cerr
			}
		}
		s.active = nil
	}
	unlockSpool(s.lock)
	if err != nil {
		return fmt.Errorf("usage: spool: sync at close: %w", err)
	}
	return nil
}
