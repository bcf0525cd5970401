package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/agent/config"
)

// smapsEntry writes one mapping as /proc/PID/smaps shows it.
func smapsEntry(rng, perms, dev string, ino uint64, path string, rss, anon int) string {
	return fmt.Sprintf("%s %s 00000000 %s %d                 %s\nSize:               7672 kB\nRss:                %d kB\nPss:                %d kB\nAnonymous:          %d kB\nVmFlags: rd ex mr mw me\n",
		rng, perms, dev, ino, path, rss, rss, anon)
}

func TestCodeMappings(t *testing.T) {
	const ino = 10019555
	dev := unix.Mkdev(0xfe, 0x00)
	exe := "/usr/bin/pulse-agent"
	cases := []struct {
		name  string
		smaps string
		want  []codeMapping
		err   error
	}{
		{"code and read-only data", smapsEntry("00400000-00b7e000", "r-xp", "fe:00", ino, exe, 7608, 0) +
			smapsEntry("00b7e000-0138c000", "r--p", "fe:00", ino, exe, 7160, 0),
			[]codeMapping{{0x400000, 0xb7e000, 7608}, {0xb7e000, 0x138c000, 7160}}, nil},
		{"writable data kept", smapsEntry("0138c000-0142e000", "rw-p", "fe:00", ino, exe, 648, 0), nil, nil},
		{"written private mapping kept", smapsEntry("00b7e000-0138c000", "r--p", "fe:00", ino, exe, 7160, 4), nil, nil},
		{"shared mapping kept", smapsEntry("00b7e000-0138c000", "r--s", "fe:00", ino, exe, 7160, 0), nil, nil},
		{"another inode", smapsEntry("00400000-00b7e000", "r-xp", "fe:00", ino+1, exe, 7608, 0), nil, nil},
		{"same inode, another device", smapsEntry("00400000-00b7e000", "r-xp", "fe:01", ino, exe, 7608, 0), nil, nil},
		{"replaced binary (deleted)", smapsEntry("00400000-00b7e000", "r-xp", "fe:00", ino, exe+" (deleted)", 12, 0),
			[]codeMapping{{0x400000, 0xb7e000, 12}}, nil},
		{"anonymous and special mappings", smapsEntry("7f3068da5000-7f3068f65000", "rw-p", "00:00", 0, "", 1552, 1552) +
			smapsEntry("7ffe8a367000-7ffe8a388000", "rw-p", "00:00", 0, "[stack]", 12, 12), nil, nil},
		{"reversed range", smapsEntry("00b7e000-00400000", "r-xp", "fe:00", ino, exe, 1, 0), nil, errMapsFormat},
		{"bad device", smapsEntry("00400000-00b7e000", "r-xp", "fe", ino, exe, 1, 0), nil, errMapsFormat},
		{"bad rss", strings.Replace(smapsEntry("00400000-00b7e000", "r-xp", "fe:00", ino, exe, 1, 0), "Rss:                1", "Rss: x", 1), nil, errMapsFormat},
		{"short header", "00400000-00b7e000 r-xp 00000000\n", nil, errMapsFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := codeMappings([]byte(tc.smaps), dev, ino)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzCodeMappings(f *testing.F) {
	dev := unix.Mkdev(0xfe, 0)
	f.Add([]byte(smapsEntry("00400000-00b7e000", "r-xp", "fe:00", 7, "/x", 7608, 0)))
	f.Add([]byte(smapsEntry("00b7e000-0138c000", "r--p", "fe:00", 7, "/x", 7160, 4)))
	f.Add([]byte("00400000-00b7e000 r-xp 0 fe:00 7\nRss: 1 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := codeMappings(b, dev, 7)
		if err != nil {
			if !errors.Is(err, errMapsFormat) && !strings.Contains(err.Error(), "read smaps") {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, m := range ms {
			if m.end <= m.start {
				t.Fatalf("empty or reversed mapping %+v", m)
			}
		}
	})
}

// mappingRSS is the Rss (KiB) and Anonymous (KiB) /proc/self/smaps gives the
// mapping starting at addr.
func mappingRSS(t *testing.T, addr uintptr) (rss, anon uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	prefix := strconv.FormatUint(uint64(addr), 16) + "-"
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if isMappingHeader([]byte(f[0])) {
			in = strings.HasPrefix(f[0], prefix)
			continue
		}
		if in && len(f) >= 2 {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "Rss:":
				rss = n
			case "Anonymous:":
				anon = n
			}
		}
	}
	return rss, anon
}

// touchSink keeps the test's page reads from being optimised away.
var touchSink byte

// TestReleaseFilePages on this kernel: a clean private read-only mapping of
// a file is released (no RSS left, its bytes still read back from the page
// cache); a mapping of the same file a write made private (an anonymous
// page, as relocations or a breakpoint would) is left alone, its write kept;
// another file's mapping is left alone.
func TestReleaseFilePages(t *testing.T) {
	const size = 1 << 20
	dir := t.TempDir()
	content := bytes.Repeat([]byte("pulse-agent code page "), size/22+1)[:size]
	path := filepath.Join(dir, "code")
	other := filepath.Join(dir, "other")
	for _, p := range []string{path, other} {
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mapFile := func(p string, prot int) []byte {
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		b, err := unix.Mmap(fd, 0, size, prot, unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(b) })
		return b
	}
	touch := func(b []byte) {
		for i := 0; i < len(b); i += 4096 {
			touchSink += b[i]
		}
	}
	clean := mapFile(path, unix.PROT_READ)
	written := mapFile(path, unix.PROT_READ|unix.PROT_WRITE)
	foreign := mapFile(other, unix.PROT_READ)
	touch(clean)
	touch(written)
	touch(foreign)
	written[0] = 'X'
	if err := unix.Mprotect(written, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	addr := func(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	cleanRSS, _ := mappingRSS(t, addr(clean))
	writtenRSS, writtenAnon := mappingRSS(t, addr(written))
	foreignRSS, _ := mappingRSS(t, addr(foreign))
	if cleanRSS == 0 || writtenAnon == 0 || foreignRSS == 0 {
		t.Fatalf("set-up: clean rss %d KiB, written anonymous %d KiB, other rss %d KiB", cleanRSS, writtenAnon, foreignRSS)
	}

	kib, err := releaseFilePages(st.Dev, st.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if kib < cleanRSS {
		t.Errorf("released %d KiB, want at least the clean mapping's %d KiB", kib, cleanRSS)
	}
	if rss, _ := mappingRSS(t, addr(clean)); rss != 0 {
		t.Errorf("clean mapping still has %d KiB resident", rss)
	}
	if rss, anon := mappingRSS(t, addr(written)); rss != writtenRSS || anon != writtenAnon {
		t.Errorf("written mapping: %d KiB resident (%d anonymous), want %d (%d): it was released", rss, anon, writtenRSS, writtenAnon)
	}
	if written[0] != 'X' {
		t.Error("the written mapping lost its write")
	}
	if rss, _ := mappingRSS(t, addr(foreign)); rss != foreignRSS {
		t.Errorf("another file's mapping went from %d to %d KiB", foreignRSS, rss)
	}
	if !bytes.Equal(clean, content) {
		t.Error("released mapping reads back other bytes")
	}
}

// rssFileKiB is RssFile from /proc/self/status.
func rssFileKiB(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssFile:" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseCodePagesOfThisBinary: the test binary (a Go program like the
// agent) releases its own code and read-only data, and goes on running.
func TestReleaseCodePagesOfThisBinary(t *testing.T) {
	before := rssFileKiB(t)
	kib, err := releaseCodePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKiB(t)
	t.Logf("released %d KiB; RssFile %d -> %d KiB", kib, before, after)
	if kib == 0 {
		t.Fatal("nothing released")
	}
	if after >= before {
		t.Errorf("RssFile %d KiB after release, was %d KiB", after, before)
	}
	// Code runs again from the page cache.
	if d, err := HashFile(SelfExe); err != nil || len(d) != 32 {
		t.Fatalf("after release: %x %v", d, err)
	}
}

// TestReleaseAfterPulseSetting: release_code_pages off releases nothing; on,
// the pages the process runs are released.
func TestReleaseAfterPulseSetting(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("release_code_pages=%t", on), func(t *testing.T) {
			if _, err := HashFile(SelfExe); err != nil { // run some code
				t.Fatal(err)
			}
			a := &Agent{cfg: &config.Config{ReleaseCodePages: on}, log: hclog.NewNullLogger()}
			before := rssFileKiB(t)
			kib := a.releaseAfterPulse()
			after := rssFileKiB(t)
			t.Logf("released %d KiB; RssFile %d -> %d KiB", kib, before, after)
			switch {
			case !on && kib != 0:
				t.Fatalf("off, yet %d KiB released", kib)
			case on && (kib == 0 || after >= before):
				t.Fatalf("on: %d KiB released, RssFile %d -> %d KiB", kib, before, after)
			case a.code.off:
				t.Fatal("release turned itself off")
			}
		})
	}
}

// TestPulsesWithCodePagesReleased: an agent on swtpm releasing its code
// pages after every pulse keeps pulsing, every pulse accepted.
func TestPulsesWithCodePagesReleased(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.cfg.ReleaseCodePages = true
	a := h.start(nil)
	requireAccepted(t, h.fv.waitPulses(t, 4, 60*time.Second))
	h.stopAgent()
	if a.code.off || len(a.code.maps) == 0 {
		t.Fatalf("the agent stopped releasing code pages (%d mappings)", len(a.code.maps))
	}
}

// BenchmarkReleaseCodePages: one release as the agent does it after a
// pulse, with the pages a pulse would have faulted back in (the test
// binary's code, re-faulted by hashing a file between releases; that
// re-fault is timed too: it is what a release costs the next pulse).
func BenchmarkReleaseCodePages(b *testing.B) {
	for b.Loop() {
		if _, err := HashFile("/proc/self/status"); err != nil {
			b.Fatal(err)
		}
		if _, err := releaseCodePages(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReleaseAfterPulse: the agent's release (mappings selected once)
// and the re-fault of the code run between two releases.
func BenchmarkReleaseAfterPulse(b *testing.B) {
	a := &Agent{cfg: &config.Config{ReleaseCodePages: true}, log: hclog.NewNullLogger()}
	for b.Loop() {
		if _, err := HashFile("/proc/self/status"); err != nil {
			b.Fatal(err)
		}
		if a.releaseAfterPulse() == 0 {
			b.Fatal("nothing released")
		}
	}
}

// BenchmarkReadSmaps: what reading /proc/self/smaps costs here.
func BenchmarkReadSmaps(b *testing.B) {
	for b.Loop() {
		if _, err := os.ReadFile("/proc/self/smaps"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefault: what a released page costs when it is run again — a
// minor fault from the page cache (the kernel maps 64 KiB around it). The
// test binary is mapped and its pages touched 23 pages apart (as a pulse's
// code is spread over the binary), then released again; reports ns/fault.
func BenchmarkRefault(b *testing.B) {
	f, err := os.Open(SelfExe)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	size := int(st.Size()) &^ 4095
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(m)
	var faults int64
	for b.Loop() {
		var r0, r1 unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &r0); err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += 23 * 4096 {
			touchSink += m[off]
		}
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &r1); err != nil {
			b.Fatal(err)
		}
		faults += r1.Minflt - r0.Minflt
		if err := unix.Madvise(m, unix.MADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
	}
	if faults == 0 {
		b.Fatal("no faults: the pages were not released")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(faults), "ns/fault")
}
