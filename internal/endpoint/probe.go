package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// maxBody is how much of a health answer is read; the rest is left unread.
const maxBody = 4 << 10

// Check looks at t once from the hub: a TCP connect, or an HTTP GET of its
// path that must answer 2xx or 3xx (redirects are not followed). Every
// connection goes to an address inside t.Ranges, checked after name
// resolution, so that neither a reported address nor a DNS answer can
// point the hub at anything else.
func Check(ctx context.Context, t Target, timeout time.Duration) error {
	if t.Invalid != "" {
		return errors.New(t.Invalid)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !Allowed(ap.Addr(), t.Ranges) {
			return fmt.Errorf("%s is outside the provider's endpoint ranges", address)
		}
		return nil
	}}
	if !t.HTTP {
		c, err := d.DialContext(ctx, "tcp", t.Dial)
		if err != nil {
			return err
		}
		return c.Close()
	}
	client := &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, Proxy: nil,
			ResponseHeaderTimeout: timeout, MaxResponseHeaderBytes: 16 << 10},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       timeout,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Dial+t.Path, nil)
	if err != nil {
		return err
	}
	if t.Host != "" {
		req.Host = t.Host
	}
	req.Header.Set("User-Agent", "flotilla-hub-endpoint-check")
	resp, err := client.Do(req)
	if err != nil {
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("GET %s: no answer within %s", t.Path, timeout)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s answered %d", t.Path, resp.StatusCode)
	}
	return nil
}
