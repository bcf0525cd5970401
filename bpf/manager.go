package bpf

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/bpf/snapshot"
)

// DefaultPinDir is where the agent pins its programs (maps under maps/, links
// under links/).
const DefaultPinDir = "/sys/fs/bpf/pulse"

// ShieldMode selects how Shield attaches to interfaces.
type ShieldMode string

const (
	// ShieldTCX attaches tcx ingress and egress programs (Linux >= 6.6):
	// packets from and to quarantined addresses are dropped.
	ShieldTCX ShieldMode = "tcx"
	// ShieldXDP attaches one XDP program (older kernels): packets from
	// quarantined addresses are dropped on ingress only.
	ShieldXDP ShieldMode = "xdp"
)

// Options configures Load.
type Options struct {
	// PinDir is the agent's bpffs directory; DefaultPinDir when empty.
	PinDir string
	// Measurer records each program before it is attached. Required.
	Measurer Measurer
	// MapMeasurer records the maps a load created (name and kernel ID)
	// before any program is attached. When nil the maps are not measured
	// and a verifier cannot tell them from planted ones.
	MapMeasurer MapMeasurer
	// InterfaceMeasurer records the ifindex of every interface Shield is
	// about to attach to, before the programs are measured. When nil the
	// interfaces are not measured and a verifier binds hooks by name only.
	InterfaceMeasurer InterfaceMeasurer
	// Logger is named "ebpf" by Load; a null logger when nil.
	Logger hclog.Logger
	// AgentPID is the process Sentinel watches and Fortress protects, in the
	// initial PID namespace; os.Getpid() when zero.
	AgentPID int
	// ServiceManagerPID may signal the agent under Fortress; 1 (init /
	// systemd) when zero, nobody when negative.
	ServiceManagerPID int
	// Interfaces Shield attaches to at load (more can be attached later with
	// Shield.Attach). Interfaces must be Ethernet-like.
	Interfaces []string
	// ShieldMode is ShieldTCX when empty.
	ShieldMode ShieldMode
	// Protected addresses are never quarantined (for example the verifier's).
	Protected []netip.Addr
	// KernelBTF overrides the running kernel's BTF for CO-RE (tests); the
	// kernel's own (/sys/kernel/btf/vmlinux) when nil.
	KernelBTF *btf.Spec
}

// Manager owns the agent's loaded eBPF programs. Close releases its file
// descriptors; the pinned programs, links and maps stay in the kernel, so
// Shield keeps filtering and Sentinel keeps recording while the agent is down.
type Manager struct {
	log      hclog.Logger
	measurer Measurer
	mapMeas  MapMeasurer
	ifMeas   InterfaceMeasurer
	pinDir   string
	mapsDir  string
	linksDir string
	release  string
	agentPID int
	btfSpec  *btf.Spec

	mu       sync.Mutex
	progs    map[string]*program
	links    map[string]link.Link
	colls    []*ebpf.Collection
	measured []ProgramMeasurement
	manifest *ebpf.Map

	shield   *Shield
	sentinel *Sentinel
	fortress *Fortress
	// fresh are the maps this load created unpinned (never adopted from a
	// pin): pinned under their name only once the programs using them are
	// attached.
	fresh map[string]*ebpf.Map
	// mapIDs is every map of this load's programs: what was measured.
	mapIDs MapMeasurement
	// ifIndex is the ifindex each Shield interface had when Shield was
	// planned onto it (what the interfaces record measured): the device
	// Shield guards, whatever the name names later.
	ifIndex map[string]uint32
}

// program is one of the agent's programs as loaded into the kernel.
type program struct {
	name   string
	prog   *ebpf.Program
	typ    string
	id     uint32
	tag    string
	insn   [32]byte
	object [32]byte
	links  []string
}

// attachment is one place a program is about to be attached.
type attachment struct {
	program   string
	point     string // as measured
	linkName  string // pin name under links/
	updatable bool   // a pinned link of this kind can take a new program atomically
	ifname    string // the interface, for Shield's attachments
	ifindex   uint32
	attach    func(*ebpf.Program) (link.Link, error)
}

// object is one compiled ELF object (bpf2go output).
type object struct {
	name  string
	bytes []byte
	load  func() (*ebpf.CollectionSpec, error)
	// fresh: the object's pinned maps are created anew at every load and
	// never adopted from a pin (docs/kernel-evidence.md, "Maps Pulse owns").
	fresh bool
}

var (
	shieldObject   = object{"shield", _ShieldBytes, loadShield, true}
	sentinelObject = object{"sentinel", _SentinelBytes, loadSentinel, false}
	fortressObject = object{"fortress", _FortressBytes, loadFortress, false}
)

// ErrNoMeasurer is returned by Load without a Measurer: nothing is loaded
// unmeasured.
var ErrNoMeasurer = errors.New("ebpf: no measurer configured")

// Load loads, measures, attaches and pins Shield and Sentinel, and tries
// Fortress (whose failure is reported by Fortress().Status(), not returned).
// For every program the order is: load into the kernel, check the kernel tag
// against the hashed instructions, measure, then attach and pin. Every
// measurement of Shield and Sentinel happens before either is attached, so a
// Measurer error leaves the previous agent's pinned programs untouched.
func Load(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Measurer == nil {
		return nil, ErrNoMeasurer
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("ebpf")
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	if opts.AgentPID == 0 {
		opts.AgentPID = os.Getpid()
	}
	switch {
	case opts.ServiceManagerPID == 0:
		opts.ServiceManagerPID = 1
	case opts.ServiceManagerPID < 0:
		opts.ServiceManagerPID = 0
	}
	if opts.ShieldMode == "" {
		opts.ShieldMode = ShieldTCX
	}
	if opts.ShieldMode != ShieldTCX && opts.ShieldMode != ShieldXDP {
		return nil, fmt.Errorf("ebpf: unknown shield mode %q", opts.ShieldMode)
	}

	if err := EnsureFilesystems(logger); err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("ebpf: remove memlock limit: %w", err)
	}
	if err := checkOnBPFFS(opts.PinDir); err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	m := &Manager{
		log:      logger,
		measurer: opts.Measurer,
		mapMeas:  opts.MapMeasurer,
		ifMeas:   opts.InterfaceMeasurer,
		fresh:    map[string]*ebpf.Map{},
		pinDir:   opts.PinDir,
		mapsDir:  filepath.Join(opts.PinDir, "maps"),
		linksDir: filepath.Join(opts.PinDir, "links"),
		agentPID: opts.AgentPID,
		btfSpec:  opts.KernelBTF,
		progs:    map[string]*program{},
		links:    map[string]link.Link{},
	}
	for _, d := range []string{m.pinDir, m.mapsDir, m.linksDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("ebpf: create pin directory: %w", err)
		}
	}
	rel, err := kernelRelease()
	if err != nil {
		return nil, fmt.Errorf("ebpf: %w", err)
	}
	m.release = rel

	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	if err := m.load(ctx, opts); err != nil {
		return nil, err
	}
	// The kernel's BTF is only needed for CO-RE while loading: kept, its
	// decoded types are ≈ 3.5 MiB of the agent's heap for its lifetime.
	m.btfSpec = nil
	ok = true
	return m, nil
}

func (m *Manager) load(ctx context.Context, opts Options) error {
	manifest, err := openManifest(m.mapsDir)
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	m.manifest = manifest

	// 1. Load everything into the kernel, attaching nothing. Sentinel
	// first: its maps are shared with Fortress.
	sentColl, sentProgs, err := m.loadObject(sentinelObject, nil)
	if err != nil {
		return fmt.Errorf("ebpf: load sentinel: %w", err)
	}
	m.sentinel, err = newSentinel(m.log.Named("sentinel"), sentColl)
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	if err := checkSentinelTracepoints(); err != nil {
		return fmt.Errorf("ebpf: sentinel: %w", err)
	}
	shieldProgs := shieldProgramNames(opts.ShieldMode)
	shColl, shProgs, err := m.loadObject(shieldObject, func(name string) bool { return slices.Contains(shieldProgs, name) })
	if err != nil {
		return fmt.Errorf("ebpf: load shield: %w", err)
	}
	m.shield, err = newShield(m, shColl, opts.ShieldMode, opts.Protected)
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	// The fresh quarantine takes over the entries of the previous pin
	// (whoever created it): dropping more is never a bypass, and the
	// verifier reconciles the set it reads from the kernel.
	if n, err := m.shield.carryOver(filepath.Join(m.mapsDir, shieldMapShieldQuarantine)); err != nil {
		m.log.Warn("previous quarantine not carried over", "error", err)
	} else if n > 0 {
		m.log.Info("carried the previous quarantine over into a fresh map", "entries", n)
	}
	m.fortress = m.loadFortress()

	// 2. Plan every attachment and measure everything.
	var plan []attachment
	for _, ifname := range opts.Interfaces {
		as, err := m.shield.attachments(ifname)
		if err != nil {
			return fmt.Errorf("ebpf: shield: %w", err)
		}
		plan = append(plan, as...)
	}
	plan = append(plan, sentinelAttachments()...)
	loaded := append(append([]*program{}, shProgs...), sentProgs...)
	if fp := m.fortress.prog; fp != nil {
		plan = append(plan, fortressAttachment())
		loaded = append(loaded, fp)
	}
	if err := m.measureMaps(ctx); err != nil {
		return err
	}
	if err := m.measureInterfaces(ctx, plan); err != nil {
		return err
	}
	if err := m.measureAll(ctx, loaded, plan); err != nil {
		return err
	}

	// 3. Point the (shared, pinned) Sentinel config at this agent, then
	// attach and pin. Fortress last: a kernel refusal there is a status.
	if err := m.sentinel.configure(opts.AgentPID, opts.ServiceManagerPID); err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	for _, a := range plan {
		if a.program == fortressAttachment().program {
			continue
		}
		if err := m.attach(m.progs[a.program], a); err != nil {
			return fmt.Errorf("ebpf: %w", err)
		}
	}
	for _, p := range append(append([]*program{}, shProgs...), sentProgs...) {
		if err := m.pinProgram(p); err != nil {
			return fmt.Errorf("ebpf: %w", err)
		}
	}
	if err := m.pinFreshMaps(); err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	if err := m.fortress.attach(); err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	m.removeStalePins()
	return m.writeManifest()
}

// loadObject loads the programs keep selects (all when nil) from obj, with
// its pinned maps reused from (or created in) the maps directory, and checks
// each program's kernel tag against the instructions it hashed.
func (m *Manager) loadObject(obj object, keep func(string) bool) (*ebpf.Collection, []*program, error) {
	spec, err := obj.load()
	if err != nil {
		return nil, nil, err
	}
	for name := range spec.Programs {
		if keep != nil && !keep(name) {
			delete(spec.Programs, name)
		}
	}
	objDigest := sha256.Sum256(obj.bytes)
	type prepared struct {
		insn [32]byte
		raw  []byte
	}
	prep := map[string]prepared{}
	for name, ps := range spec.Programs {
		var kernel *btf.Spec
		if hasCORE(ps) {
			if kernel, err = m.kernelBTF(); err != nil {
				return nil, nil, err
			}
		}
		d, raw, err := prepareProgram(ps, kernel)
		if err != nil {
			return nil, nil, err
		}
		prep[name] = prepared{d, raw}
	}
	var fresh []string
	if obj.fresh {
		for name, ms := range spec.Maps {
			if ms.Pinning == ebpf.PinByName {
				ms.Pinning = ebpf.PinNone
				fresh = append(fresh, name)
			}
		}
	} else {
		m.dropIncompatibleMaps(spec)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: m.mapsDir},
	})
	if err != nil {
		return nil, nil, err
	}
	for _, name := range fresh {
		m.fresh[name] = coll.Maps[name]
	}
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	var progs []*program
	for _, name := range names {
		p := coll.Programs[name]
		info, err := p.Info()
		if err != nil {
			coll.Close()
			return nil, nil, fmt.Errorf("program %s: info: %w", name, err)
		}
		id, _ := info.ID()
		if !tagMatches(info.Tag, prep[name].raw) {
			coll.Close()
			return nil, nil, fmt.Errorf("program %s (id %d, tag %s): %w", name, id, info.Tag, ErrTagMismatch)
		}
		progs = append(progs, &program{
			name:   name,
			prog:   p,
			typ:    typeName(p.Type()),
			id:     uint32(id),
			tag:    info.Tag,
			insn:   prep[name].insn,
			object: objDigest,
		})
	}
	m.mu.Lock()
	m.colls = append(m.colls, coll)
	for _, p := range progs {
		m.progs[p.name] = p
	}
	m.mu.Unlock()
	m.log.Debug("loaded object", "object", obj.name, "programs", len(progs), "object_sha256", fmt.Sprintf("%x", objDigest))
	return coll, progs, nil
}

func (m *Manager) kernelBTF() (*btf.Spec, error) {
	if m.btfSpec != nil {
		return m.btfSpec, nil
	}
	s, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel btf: %w", err)
	}
	m.btfSpec = s
	return s, nil
}

// dropIncompatibleMaps unpins pinned maps whose layout no longer matches the
// object (an upgraded agent): their old contents cannot be read anyway.
func (m *Manager) dropIncompatibleMaps(spec *ebpf.CollectionSpec) {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(m.mapsDir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			continue
		}
		if err := ms.Compatible(old); err != nil {
			m.log.Warn("pinned map has an old layout; replacing it", "map", name, "error", err)
			if err := os.Remove(path); err != nil {
				m.log.Error("cannot unpin incompatible map", "map", name, "error", err)
			}
		}
		old.Close()
	}
}

// measureAll measures each program once per planned attachment, and once with
// an empty attach point when it has none (it is only pinned).
func (m *Manager) measureAll(ctx context.Context, progs []*program, plan []attachment) error {
	for _, p := range progs {
		var points []string
		for _, a := range plan {
			if a.program == p.name {
				points = append(points, a.point)
			}
		}
		if len(points) == 0 {
			points = []string{""}
		}
		for _, pt := range points {
			if err := m.measure(ctx, p, pt); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Manager) measure(ctx context.Context, p *program, point string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ebpf: measure %s: %w", p.name, err)
	}
	pm := ProgramMeasurement{
		Name:          p.name,
		Type:          p.typ,
		AttachPoint:   point,
		InsnSHA256:    p.insn,
		KernelTag:     p.tag,
		ObjectSHA256:  p.object,
		KernelRelease: m.release,
		ProgramID:     p.id,
	}
	if err := m.measurer.MeasureProgram(ctx, pm); err != nil {
		return fmt.Errorf("ebpf: measure %s before attaching at %q: %w", p.name, point, err)
	}
	m.mu.Lock()
	m.measured = append(m.measured, pm)
	m.mu.Unlock()
	m.log.Info("measured program", "program", p.name, "type", p.typ, "attach_point", point,
		"tag", p.tag, "insn_sha256", fmt.Sprintf("%x", p.insn), "program_id", p.id)
	return nil
}

// attach attaches p as planned and pins the link, replacing the link a
// previous agent pinned under the same name (atomically where the link type
// allows updating its program).
func (m *Manager) attach(p *program, a attachment) error {
	if p == nil {
		return fmt.Errorf("attach %s: program not loaded", a.point)
	}
	path := filepath.Join(m.linksDir, a.linkName)
	old, oldErr := link.LoadPinnedLink(path, nil)
	if oldErr == nil && a.updatable {
		err := old.Update(p.prog)
		if err == nil {
			m.addLink(p, a.linkName, old, true)
			m.log.Info("attached program (replaced the program of the pinned link)", "program", p.name, "attach_point", a.point)
			return nil
		}
		m.log.Debug("cannot update pinned link; re-attaching", "link", a.linkName, "error", err)
		// One XDP program per interface: release the old link first.
		_ = old.Unpin()
		_ = old.Close()
		old = nil
	}
	l, err := a.attach(p.prog)
	if err != nil {
		if old != nil {
			old.Close()
		}
		return fmt.Errorf("attach %s at %s: %w", p.name, a.point, err)
	}
	switch {
	case old != nil:
		// The new link is live; dropping the old one detaches the previous
		// agent's program. Both ran for a moment, never neither.
		_ = old.Unpin()
		_ = old.Close()
	case oldErr != nil && !errors.Is(oldErr, os.ErrNotExist):
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.Close()
			return fmt.Errorf("replace %s: %w", path, err)
		}
	}
	pinned := true
	if err := l.Pin(path); err != nil {
		// Kernels without pinnable links of this kind: the program stays
		// attached only while the agent holds the link, and the snapshot
		// cannot check the attachment.
		pinned = false
		m.log.Warn("link cannot be pinned; it will detach when the agent exits", "link", a.linkName, "error", err)
	}
	m.addLink(p, a.linkName, l, pinned)
	m.log.Info("attached program", "program", p.name, "attach_point", a.point, "link", a.linkName)
	return nil
}

// addLink records a live link; a pinned one is also expected in snapshots.
func (m *Manager) addLink(p *program, name string, l link.Link, pinned bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, ok := m.links[name]; ok && prev != l {
		prev.Close()
	}
	m.links[name] = l
	if pinned && !slices.Contains(p.links, name) {
		p.links = append(p.links, name)
		sort.Strings(p.links)
	}
}

// pinProgram pins p under its name, replacing a previous agent's pin.
func (m *Manager) pinProgram(p *program) error {
	path := filepath.Join(m.pinDir, p.name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin previous %s: %w", p.name, err)
	}
	if err := p.prog.Pin(path); err != nil {
		return fmt.Errorf("pin %s: %w", p.name, err)
	}
	return nil
}

// removeStalePins unpins programs and links a previous agent left that this
// one did not load (a component that now fails, an interface no longer
// configured). Unpinning the last reference detaches and unloads them.
func (m *Manager) removeStalePins() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if entries, err := os.ReadDir(m.pinDir); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			if _, ok := m.progs[e.Name()]; ok && m.progs[e.Name()].prog.IsPinned() {
				continue
			}
			m.log.Warn("removing stale program pin", "pin", e.Name())
			_ = os.Remove(filepath.Join(m.pinDir, e.Name()))
		}
	}
	if entries, err := os.ReadDir(m.linksDir); err == nil {
		for _, e := range entries {
			if _, ok := m.links[e.Name()]; ok {
				continue
			}
			m.log.Warn("removing stale link pin", "pin", e.Name())
			_ = os.Remove(filepath.Join(m.linksDir, e.Name()))
		}
	}
}

// Shield returns the packet filter.
func (m *Manager) Shield() *Shield { return m.shield }

// Sentinel returns the signal and program-load recorder.
func (m *Manager) Sentinel() *Sentinel { return m.sentinel }

// Fortress returns the BPF-LSM supervisor (possibly inactive).
func (m *Manager) Fortress() *Fortress { return m.fortress }

// PinDir returns the directory the programs are pinned under.
func (m *Manager) PinDir() string { return m.pinDir }

// KernelRelease returns uname -r as measured.
func (m *Manager) KernelRelease() string { return m.release }

// Measurements returns every measurement handed to the Measurer, in order.
func (m *Manager) Measurements() []ProgramMeasurement {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.measured)
}

// Expectations returns the load records of the pinned programs: what each
// pin must still resolve to.
func (m *Manager) Expectations() map[string]snapshot.Expectation {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.expectationsLocked()
}

func (m *Manager) expectationsLocked() map[string]snapshot.Expectation {
	out := make(map[string]snapshot.Expectation, len(m.progs))
	for name, p := range m.progs {
		if !p.prog.IsPinned() {
			continue
		}
		out[name] = snapshot.Expectation{
			ID:         p.id,
			Type:       p.typ,
			Tag:        p.tag,
			InsnSHA256: p.insn,
			Links:      slices.Clone(p.links),
		}
	}
	return out
}

// Snapshot lists every program loaded on the host and checks each of the
// agent's pins against what the agent loaded.
func (m *Manager) Snapshot(ctx context.Context) (snapshot.Snapshot, error) {
	return TakeSnapshot(ctx, m.pinDir, m.Expectations())
}

// Close releases the manager's file descriptors. Pinned programs, links and
// maps stay in the kernel.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for name, l := range m.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
	}
	m.links = map[string]link.Link{}
	for _, c := range m.colls {
		c.Close()
	}
	m.colls = nil
	if m.manifest != nil {
		m.manifest.Close()
		m.manifest = nil
	}
	return errors.Join(errs...)
}

// RemoveAll unpins everything under pinDir (programs, links, maps), which
// detaches and unloads the agent's programs once no process holds them, and
// removes the directory. For uninstalling and for tests.
func RemoveAll(pinDir string) error {
	if pinDir == "" || filepath.Clean(pinDir) == BPFFSPath || filepath.Clean(pinDir) == "/" {
		return fmt.Errorf("ebpf: refusing to remove %q", pinDir)
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("ebpf: remove %s: %w", pinDir, err)
	}
	return nil
}

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
