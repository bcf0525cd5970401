package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent's binary is mapped into its address space: code, read-only data
// and data. The kernel maps a file's cached pages in 64 KiB blocks around each
// page a fault touches (fault-around), so the few hundred code pages a pulse
// runs leave ≈ 10 MiB of the 17 MB binary mapped, and start-up (package
// initialisation, eBPF loading, enrollment) leaves nearly all of it: that is
// most of the agent's RSS (docs/performance.md, "A real agent on swtpm").
//
// releaseCodePages drops the agent's page-table entries for the read-only,
// file-backed segments of its own executable (madvise MADV_DONTNEED): the
// pages stay in the page cache, clean, and the next instruction that needs
// one faults it back in from there (a minor fault, no I/O). Nothing changes
// for what is measured or reported: the running file is still the file it
// was (the kernel keeps it open as the executable), and its hash is read with
// read(2), never through these mappings.

// codeMapping is one mapping of the file to release.
type codeMapping struct {
	start, end uint64
	rss        uint64 // KiB
}

// errMapsFormat is a line of /proc/self/smaps that is not what the kernel writes.
var errMapsFormat = errors.New("unexpected smaps format")

// codeMappings selects, from /proc/self/smaps, the private, read-only
// (never writable) mappings of the file identified by dev and ino that hold
// no anonymous pages: a private mapping with anonymous pages was written
// (relocations, a debugger's breakpoint) and dropping it would lose that.
func codeMappings(smaps []byte, dev, ino uint64) ([]codeMapping, error) {
	var out []codeMapping
	var cur *codeMapping
	anon := false
	flush := func() {
		if cur != nil && !anon {
			out = append(out, *cur)
		}
		cur, anon = nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if isMappingHeader(f[0]) {
			flush()
			m, ok, err := parseMappingHeader(f, dev, ino)
			if err != nil {
				return nil, err
			}
			if ok {
				cur = &m
			}
			continue
		}
		if cur == nil || len(f) < 2 {
			continue
		}
		switch string(f[0]) {
		case "Rss:":
			n, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", errMapsFormat, line)
			}
			cur.rss = n
		case "Anonymous:":
			n, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", errMapsFormat, line)
			}
			anon = n != 0
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read smaps: %w", err)
	}
	flush()
	return out, nil
}

// isMappingHeader tells a mapping's first line ("start-end perms ...") from
// its "Key: value" lines.
func isMappingHeader(first []byte) bool {
	return first[len(first)-1] != ':' && bytes.IndexByte(first, '-') > 0
}

// parseMappingHeader reads "start-end perms offset major:minor inode [path]"
// and reports whether it maps the file dev/ino private and read-only.
func parseMappingHeader(f [][]byte, dev, ino uint64) (codeMapping, bool, error) {
	if len(f) < 5 {
		return codeMapping{}, false, fmt.Errorf("%w: %q", errMapsFormat, bytes.Join(f, []byte(" ")))
	}
	lo, hi, ok := bytes.Cut(f[0], []byte("-"))
	if !ok {
		return codeMapping{}, false, fmt.Errorf("%w: range %q", errMapsFormat, f[0])
	}
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	if err1 != nil || err2 != nil || end <= start {
		return codeMapping{}, false, fmt.Errorf("%w: range %q", errMapsFormat, f[0])
	}
	perms := f[1]
	if len(perms) != 4 {
		return codeMapping{}, false, fmt.Errorf("%w: permissions %q", errMapsFormat, perms)
	}
	major, minor, ok := bytes.Cut(f[3], []byte(":"))
	if !ok {
		return codeMapping{}, false, fmt.Errorf("%w: device %q", errMapsFormat, f[3])
	}
	maj, err1 := strconv.ParseUint(string(major), 16, 32)
	mnr, err2 := strconv.ParseUint(string(minor), 16, 32)
	inode, err3 := strconv.ParseUint(string(f[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return codeMapping{}, false, fmt.Errorf("%w: device or inode %q %q", errMapsFormat, f[3], f[4])
	}
	m := codeMapping{start: start, end: end}
	want := perms[0] == 'r' && perms[1] == '-' && perms[3] == 'p' &&
		inode != 0 && inode == ino && unix.Mkdev(uint32(maj), uint32(mnr)) == dev
	return m, want, nil
}

// fileMappings reads /proc/self/smaps for the mappings of the file dev/ino
// that codeMappings selects.
func fileMappings(dev, ino uint64) ([]codeMapping, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("release code pages: %w", err)
	}
	ms, err := codeMappings(smaps, dev, ino)
	if err != nil {
		return nil, fmt.Errorf("release code pages: %w", err)
	}
	return ms, nil
}

// releaseMappings drops this process's page-table entries for ms.
func releaseMappings(ms []codeMapping) error {
	for _, m := range ms {
		if err := madviseDontNeed(m.start, m.end); err != nil {
			return fmt.Errorf("release code pages %#x-%#x: %w", m.start, m.end, err)
		}
	}
	return nil
}

// releaseFilePages drops this process's mappings of the file's pages (see
// codeMappings for which) and returns how many KiB were mapped before.
func releaseFilePages(dev, ino uint64) (uint64, error) {
	ms, err := fileMappings(dev, ino)
	if err != nil {
		return 0, err
	}
	var kib uint64
	for _, m := range ms {
		kib += m.rss
	}
	return kib, releaseMappings(ms)
}

// exeMappings selects the running executable's mappings to release.
func exeMappings() ([]codeMapping, error) {
	var st unix.Stat_t
	if err := unix.Stat(SelfExe, &st); err != nil {
		return nil, fmt.Errorf("release code pages: stat %s: %w", SelfExe, err)
	}
	return fileMappings(st.Dev, st.Ino)
}

// releaseCodePages releases the running executable's read-only pages and
// returns how many KiB were mapped before.
func releaseCodePages() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(SelfExe, &st); err != nil {
		return 0, fmt.Errorf("release code pages: stat %s: %w", SelfExe, err)
	}
	return releaseFilePages(st.Dev, st.Ino)
}

// codeRelease is the agent's state for release_code_pages. The mappings are
// selected once, at the first release: the executable's mappings do not
// move, and a read-only mapping only gets anonymous pages from a loader
// (relocations, before main) or from a debugger or /proc/PID/mem writer,
// whose changes a later release would undo (set release_code_pages = false
// to debug the agent). Reading smaps every pulse cost ≈ 0.6 ms here.
type codeRelease struct {
	maps []codeMapping
	off  bool
}

func madviseDontNeed(start, end uint64) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
	if errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}

// releaseAfterPulse releases the code pages the pulse faulted in, when
// release_code_pages is on, and returns how many KiB of address space it
// released (resident or not). A failure is logged once and turns it off: it
// costs memory, never a pulse.
func (a *Agent) releaseAfterPulse() uint64 {
	if !a.cfg.ReleaseCodePages || a.code.off {
		return 0
	}
	log := a.log.Named("memory")
	if a.code.maps == nil {
		ms, err := exeMappings()
		if err == nil && len(ms) == 0 {
			err = errors.New("no read-only mapping of the executable found")
		}
		if err != nil {
			a.code.off = true
			log.Warn("cannot release code pages; not trying again", "error", err)
			return 0
		}
		a.code.maps = ms
	}
	if err := releaseMappings(a.code.maps); err != nil {
		a.code.off = true
		log.Warn("cannot release code pages; not trying again", "error", err)
		return 0
	}
	var kib uint64
	for _, m := range a.code.maps {
		kib += (m.end - m.start) / 1024
	}
	log.Trace("released code pages", "mapped_kib", kib)
	return kib
}
