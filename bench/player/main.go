// Command player loads a video server as many viewers of one large video would.
//
// Each viewer is a player: it opens an open-ended range (Range: bytes=N-),
// reads ahead a few seconds of buffer as fast as the server sends, then reads
// at the video's bitrate, and now and then seeks (closes the connection and
// opens a new open-ended range at a random offset). Its playback clock starts
// when it opens a range; a viewer stalls when it falls more than -stall behind
// that clock (its buffer has run dry for that long), and then rebuffers: its
// clock restarts from what it has.
//
// The viewers start spread over -start-over, then are held for -hold; the
// report, one JSON object on stdout, says how many viewers went the whole run
// without a stall, the bytes per second delivered during the hold, the stalls,
// the time to first byte after seeks, and, for the processes named by -pids,
// the CPU they used during the hold (from /proc/PID/stat).
//
//	go build && ./player -url http://127.0.0.1:8080/video.mp4 -viewers 200 -hold 20s -pids 1234
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on Linux.
const clockTicks = 100

type config struct {
	target    *url.URL
	size      int64
	rate      float64 // bytes per second of playback
	ahead     time.Duration
	stall     time.Duration
	seekEvery time.Duration
	chunk     int
}

type stats struct {
	bytes    atomic.Int64
	stalls   atomic.Int64
	seeks    atomic.Int64
	reopens  atomic.Int64
	mu       sync.Mutex
	ttfbSeek []time.Duration
	ttfbOpen []time.Duration
	errs     []string
	errCount int
}

func (s *stats) ttfb(d time.Duration, seek bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seek {
		s.ttfbSeek = append(s.ttfbSeek, d)
	} else {
		s.ttfbOpen = append(s.ttfbOpen, d)
	}
}

func (s *stats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errCount++
	if len(s.errs) < 5 {
		s.errs = append(s.errs, err.Error())
	}
}

// viewer is one player. Its playback clock: started at t0, it has played
// rate*(now-t0) bytes of the received ones.
type viewer struct {
	cfg      *config
	st       *stats
	rng      *rand.Rand
	t0       time.Time
	received int64 // bytes since t0
	pos      int64 // offset of the next byte in the file
	stalled  bool
	conn     net.Conn
	body     *bufio.Reader
	left     int64 // bytes of the current response not yet read
}

// deadline is when the viewer's buffer will have been dry for cfg.stall.
func (v *viewer) deadline() time.Time {
	return v.t0.Add(time.Duration(float64(v.received)/v.cfg.rate*float64(time.Second)) + v.cfg.stall)
}

func (v *viewer) stallNow() {
	v.st.stalls.Add(1)
	v.stalled = true
	// Rebuffer: the clock restarts from what has been received.
	v.t0 = time.Now().Add(-time.Duration(float64(v.received) / v.cfg.rate * float64(time.Second)))
}

func (v *viewer) close() {
	if v.conn != nil {
		v.conn.Close()
		v.conn, v.body = nil, nil
	}
}

// open asks for bytes=pos- and reads the response's head, stalling as the
// clock says while it waits.
func (v *viewer) open(ctx context.Context) error {
	v.close()
	dialer := net.Dialer{}
	for {
		dctx, cancel := context.WithDeadline(ctx, v.deadline())
		conn, err := dialer.DialContext(dctx, "tcp", v.cfg.target.Host)
		cancel()
		if err == nil {
			v.conn = conn
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		v.stallNow()
	}
	request := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nRange: bytes=%d-\r\nConnection: close\r\n\r\n",
		v.cfg.target.RequestURI(), v.cfg.target.Host, v.pos)
	if _, err := v.conn.Write([]byte(request)); err != nil {
		return err
	}
	v.body = bufio.NewReaderSize(v.conn, v.cfg.chunk)
	status := true
	v.left = -1
	for {
		var line string
		err := v.await(func() (err error) { line, err = v.body.ReadString('\n'); return })
		if err != nil {
			if isTimeout(err) && line == "" {
				v.stallNow()
				continue
			}
			return fmt.Errorf("response head: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if status {
			if !strings.HasPrefix(line, "HTTP/1.1 206") {
				return fmt.Errorf("bytes=%d-: %q", v.pos, line)
			}
			status = false
			continue
		}
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(name, "Content-Length") {
			v.left, _ = strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		}
	}
	if v.left < 0 {
		return fmt.Errorf("bytes=%d-: no Content-Length", v.pos)
	}
	return nil
}

// await runs read, a read from the connection, until the viewer's stall
// deadline. A read that times out is tried once more at once: if the bytes
// had come meanwhile, it was this process that was late (a busy machine), not
// the server, and that is no stall.
func (v *viewer) await(read func() error) error {
	v.conn.SetReadDeadline(v.deadline())
	err := read()
	if isTimeout(err) {
		v.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		err = read()
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// seek starts a new session at a random offset: a new clock, a new range.
func (v *viewer) seek(ctx context.Context, counted bool) error {
	v.pos = v.rng.Int64N(v.cfg.size * 9 / 10)
	v.t0, v.received = time.Now(), 0
	if counted {
		v.st.seeks.Add(1)
	}
	if err := v.open(ctx); err != nil {
		return err
	}
	return v.firstByte(counted)
}

// firstByte waits for the first byte of the body and records how long the
// open took, from the moment the clock started.
func (v *viewer) firstByte(seek bool) error {
	for {
		err := v.await(func() error { _, err := v.body.Peek(1); return err })
		if err == nil {
			v.st.ttfb(time.Since(v.t0), seek)
			return nil
		}
		if !isTimeout(err) {
			return err
		}
		v.stallNow()
	}
}

func (v *viewer) run(ctx context.Context, start time.Duration) {
	select {
	case <-time.After(start):
	case <-ctx.Done():
		return
	}
	defer v.close()
	buf := make([]byte, v.cfg.chunk)
	nextSeek := v.nextSeek()
	err := v.seek(ctx, false)
	for ctx.Err() == nil {
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			v.st.fail(err)
			// Reopen where it stopped, on the same clock: the time lost counts.
			v.st.reopens.Add(1)
			if err = v.open(ctx); err == nil {
				err = v.firstByte(false)
			}
			if err != nil {
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			continue
		}
		now := time.Now()
		if now.After(nextSeek) {
			nextSeek = v.nextSeek()
			err = v.seek(ctx, true)
			continue
		}
		if v.left == 0 {
			err = v.seek(ctx, false) // the end of the file: play on from elsewhere
			continue
		}
		// Read ahead up to cfg.ahead of buffer, then at the bitrate.
		allowed := int64(v.cfg.rate*(now.Sub(v.t0)+v.cfg.ahead).Seconds()) - v.received
		if allowed < int64(v.cfg.chunk)/4 {
			wait := time.Duration(float64(int64(v.cfg.chunk)/4-allowed) / v.cfg.rate * float64(time.Second))
			if until := time.Until(nextSeek); until < wait {
				wait = until
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			continue
		}
		want := min(allowed, int64(len(buf)), v.left)
		var n int
		rerr := v.await(func() (err error) { n, err = v.body.Read(buf[:want]); return })
		v.received += int64(n)
		v.pos += int64(n)
		v.left -= int64(n)
		v.st.bytes.Add(int64(n))
		if rerr != nil {
			if isTimeout(rerr) {
				v.stallNow()
			} else {
				err = rerr
			}
		}
	}
}

func (v *viewer) nextSeek() time.Time {
	if v.cfg.seekEvery <= 0 {
		return time.Now().Add(100 * 365 * 24 * time.Hour)
	}
	return time.Now().Add(time.Duration(v.rng.ExpFloat64() * float64(v.cfg.seekEvery)))
}

func cpuSeconds(pids []int) (float64, error) {
	total := 0.0
	for _, pid := range pids {
		name := "/proc/self/stat"
		if pid != 0 {
			name = fmt.Sprintf("/proc/%d/stat", pid)
		}
		data, err := os.ReadFile(name)
		if err != nil {
			return 0, err
		}
		// The fields after the command (which may hold spaces) start after its ')'.
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		total += (utime + stime) / clockTicks
	}
	return total, nil
}

type percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func millis(ds []time.Duration) percentiles {
	if len(ds) == 0 {
		return percentiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
	}
	return percentiles{len(ds), at(0.5), at(0.9), at(0.99), at(1)}
}

type report struct {
	Viewers        int         `json:"viewers"`
	ViewersHeld    int         `json:"viewers_held"`
	ViewersStalled int         `json:"viewers_stalled"`
	Stalls         int64       `json:"stalls"`
	HoldS          float64     `json:"hold_s"`
	BytesPerS      float64     `json:"bytes_per_s"`
	GbitPerS       float64     `json:"gbit_per_s"`
	WantedGbitPerS float64     `json:"wanted_gbit_per_s"`
	Seeks          int64       `json:"seeks"`
	TTFBSeekMs     percentiles `json:"ttfb_seek_ms"`
	TTFBOpenMs     percentiles `json:"ttfb_open_ms"`
	Reopens        int64       `json:"reopens"`
	Errors         int         `json:"errors"`
	FirstErrors    []string    `json:"first_errors"`
	ServerCPUS     *float64    `json:"server_cpu_s"`
	CPUSPerGbit    *float64    `json:"server_cpu_s_per_gbit"`
	GeneratorCPUS  float64     `json:"generator_cpu_s"`
}

func fileSize(target *url.URL) (int64, error) {
	resp, err := http.Head(target.String())
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		return 0, fmt.Errorf("HEAD %s: %s, length %d", target, resp.Status, resp.ContentLength)
	}
	return resp.ContentLength, nil
}

func main() {
	rawURL := flag.String("url", "", "the video, served with range support")
	viewers := flag.Int("viewers", 100, "how many viewers")
	hold := flag.Duration("hold", 20*time.Second, "how long all viewers are held once started")
	startOver := flag.Duration("start-over", 2*time.Second, "the viewers start spread over this long")
	bitrate := flag.Float64("bitrate", 8e6, "the video's bitrate, in bits per second")
	ahead := flag.Duration("ahead", 4*time.Second, "how much buffer a viewer reads ahead")
	stall := flag.Duration("stall", 2*time.Second, "a viewer stalls when its buffer has been dry this long")
	seekEvery := flag.Duration("seek-every", 10*time.Second, "mean time between a viewer's seeks (0: never)")
	chunk := flag.Int("chunk", 64*1024, "bytes a viewer reads at most at once")
	pidList := flag.String("pids", "", "comma-separated pids whose CPU during the hold is reported")
	seed := flag.Uint64("seed", 1, "seed of the offsets and seek times")
	flag.Parse()

	target, err := url.Parse(*rawURL)
	if err != nil || target.Host == "" {
		fmt.Fprintln(os.Stderr, "player: -url must be an http:// URL")
		os.Exit(2)
	}
	var pids []int
	for _, p := range strings.Split(*pidList, ",") {
		if p = strings.TrimSpace(p); p != "" {
			pid, err := strconv.Atoi(p)
			if err != nil || pid <= 0 {
				fmt.Fprintf(os.Stderr, "player: -pids: %q is not a pid\n", p)
				os.Exit(2)
			}
			pids = append(pids, pid)
		}
	}
	size, err := fileSize(target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "player:", err)
		os.Exit(1)
	}
	cfg := &config{target: target, size: size, rate: *bitrate / 8, ahead: *ahead, stall: *stall,
		seekEvery: *seekEvery, chunk: *chunk}
	st := &stats{}

	ctx, cancel := context.WithCancel(context.Background())
	all := make([]*viewer, *viewers)
	var wg sync.WaitGroup
	for i := range all {
		all[i] = &viewer{cfg: cfg, st: st, rng: rand.New(rand.NewPCG(*seed, uint64(i)))}
		start := time.Duration(int64(*startOver) * int64(i) / int64(*viewers))
		wg.Add(1)
		go func() {
			defer wg.Done()
			all[i].run(ctx, start)
		}()
	}
	time.Sleep(*startOver)
	cpu0, cpuErr := cpuSeconds(pids)
	self0, _ := cpuSeconds([]int{0})
	bytes0, began := st.bytes.Load(), time.Now()
	time.Sleep(*hold)
	bytes1, held := st.bytes.Load(), time.Since(began)
	cpu1, cpuErr1 := cpuSeconds(pids)
	self1, _ := cpuSeconds([]int{0})
	cancel()
	wg.Wait()

	r := report{Viewers: *viewers, Stalls: st.stalls.Load(), HoldS: held.Seconds(), Seeks: st.seeks.Load(),
		Reopens: st.reopens.Load(), Errors: st.errCount, FirstErrors: st.errs, GeneratorCPUS: self1 - self0}
	for _, v := range all {
		if v.stalled {
			r.ViewersStalled++
		}
	}
	r.ViewersHeld = r.Viewers - r.ViewersStalled
	r.BytesPerS = float64(bytes1-bytes0) / held.Seconds()
	r.GbitPerS = r.BytesPerS * 8 / 1e9
	r.WantedGbitPerS = float64(*viewers) * *bitrate / 1e9
	r.TTFBSeekMs, r.TTFBOpenMs = millis(st.ttfbSeek), millis(st.ttfbOpen)
	if len(pids) > 0 && cpuErr == nil && cpuErr1 == nil {
		used := cpu1 - cpu0
		perGbit := used / (float64(bytes1-bytes0) * 8 / 1e9)
		r.ServerCPUS, r.CPUSPerGbit = &used, &perGbit
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	out.Encode(r)
}
