package bpf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/bpf/snapshot"
)

// The snapshot runs every pulse, so it walks the kernel's programs with the
// three bpf(2) commands it needs per program (get next ID, get fd by ID, get
// info) instead of the library's richer Info, which also parses
// /proc/self/fdinfo and costs several times more.

const (
	cmdProgGetNextID = 11 // BPF_PROG_GET_NEXT_ID
	cmdProgGetFDByID = 13 // BPF_PROG_GET_FD_BY_ID
	cmdObjGetInfo    = 15 // BPF_OBJ_GET_INFO_BY_FD
)

// getIDAttr is the bpf_attr member for the *_GET_NEXT_ID / *_GET_FD_BY_ID commands.
type getIDAttr struct {
	id        uint32
	nextID    uint32
	openFlags uint32
}

type infoAttr struct {
	fd      uint32
	infoLen uint32
	info    uint64
}

// progInfoPrefix is struct bpf_prog_info up to and including name.
type progInfoPrefix struct {
	typ            uint32
	id             uint32
	tag            [8]byte
	jitedProgLen   uint32
	xlatedProgLen  uint32
	jitedProgInsns uint64
	xlatedInsns    uint64
	loadTime       uint64
	createdByUID   uint32
	nrMapIDs       uint32
	mapIDs         uint64
	name           [16]byte
}

func bpfCall(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// nextProgramID returns the next loaded program's ID after id, or
// os.ErrNotExist at the end.
func nextProgramID(id uint32) (uint32, error) {
	attr := getIDAttr{id: id}
	if _, err := bpfCall(cmdProgGetNextID, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, os.ErrNotExist
		}
		return 0, fmt.Errorf("bpf prog get next id: %w", err)
	}
	return attr.nextID, nil
}

// programByID returns the ID, name, type and tag of a loaded program, or
// os.ErrNotExist when it went away.
func programByID(id uint32) (snapshot.Program, error) {
	attr := getIDAttr{id: id}
	fd, err := bpfCall(cmdProgGetFDByID, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return snapshot.Program{}, os.ErrNotExist
		}
		return snapshot.Program{}, fmt.Errorf("bpf prog get fd by id %d: %w", id, err)
	}
	defer unix.Close(int(fd))
	var info progInfoPrefix
	ia := infoAttr{fd: uint32(fd), infoLen: uint32(unsafe.Sizeof(info)), info: uint64(uintptr(unsafe.Pointer(&info)))}
	if _, err := bpfCall(cmdObjGetInfo, unsafe.Pointer(&ia), unsafe.Sizeof(ia)); err != nil {
		return snapshot.Program{}, fmt.Errorf("bpf obj get info of program %d: %w", id, err)
	}
	name := unix.ByteSliceToString(info.name[:])
	if len(name) == len(info.name)-1 {
		// Possibly truncated: take the full name from the program's BTF,
		// as bpftool does. Programs do not change, so it is looked up once.
		name = longNames.lookup(int(fd), info.id, info.loadTime, name)
	}
	return snapshot.Program{
		ID:   info.id,
		Name: name,
		Type: ProgramTypeName(info.typ),
		Tag:  hex.EncodeToString(info.tag[:]),
	}, nil
}

// nameCache remembers the full names of programs whose kernel name is cut
// at 15 characters, keyed by ID and load time (IDs are not reused while a
// program lives).
type nameCache struct {
	mu    sync.Mutex
	names map[nameKey]string
}

type nameKey struct {
	id       uint32
	loadTime uint64
}

var longNames = &nameCache{names: map[nameKey]string{}}

func (c *nameCache) lookup(fd int, id uint32, loadTime uint64, short string) string {
	k := nameKey{id, loadTime}
	c.mu.Lock()
	name, ok := c.names[k]
	c.mu.Unlock()
	if ok {
		return name
	}
	name = short
	if dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
		if p, err := ebpf.NewProgramFromFD(dup); err == nil {
			if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, short) {
				name = info.Name
			}
			p.Close()
		} // NewProgramFromFD owns dup, also on error.
	}
	c.mu.Lock()
	if len(c.names) > 4096 {
		clear(c.names)
	}
	c.names[k] = name
	c.mu.Unlock()
	return name
}

const cmdObjGet = 7 // BPF_OBJ_GET

type objGetAttr struct {
	pathname  uint64
	bpfFD     uint32
	fileFlags uint32
	pathFD    int32
	_         uint32
}

// pinnedProgram resolves a pin to the program it holds: ID, type and tag.
// It fails when the pin is gone or holds something other than a program.
func pinnedProgram(path string) (snapshot.LivePin, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return snapshot.LivePin{}, err
	}
	attr := objGetAttr{pathname: uint64(uintptr(unsafe.Pointer(p)))}
	fd, err := bpfCall(cmdObjGet, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	if err != nil {
		return snapshot.LivePin{}, fmt.Errorf("bpf obj get %s: %w", path, err)
	}
	defer unix.Close(int(fd))
	buf := make([]byte, 32)
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf)
	if err != nil {
		return snapshot.LivePin{}, fmt.Errorf("object type of %s: %w", path, err)
	}
	if kind := string(buf[:n]); kind != "anon_inode:bpf-prog" {
		return snapshot.LivePin{}, fmt.Errorf("%s holds %s, not a program", path, kind)
	}
	var info progInfoPrefix
	ia := infoAttr{fd: uint32(fd), infoLen: uint32(unsafe.Sizeof(info)), info: uint64(uintptr(unsafe.Pointer(&info)))}
	if _, err := bpfCall(cmdObjGetInfo, unsafe.Pointer(&ia), unsafe.Sizeof(ia)); err != nil {
		return snapshot.LivePin{}, fmt.Errorf("bpf obj get info of %s: %w", path, err)
	}
	return snapshot.LivePin{ID: info.id, Type: ProgramTypeName(info.typ), Tag: hex.EncodeToString(info.tag[:])}, nil
}
