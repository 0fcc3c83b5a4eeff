package redis

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Default ports of the hosts of a URL that names none.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// redacted replaces passwords in URLs shown in errors.
const redacted = "xxxxx"

// NewClient connects to the Redis that rawURL names. It accepts:
//
//	redis://[[user]:password@]host[:port][/db][?options]
//	rediss://…                             the same over TLS
//	unix://[[user]:password@]/path/to/redis.sock[?db=N&options]
//	redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db][?options]
//	redis+cluster://[[user]:password@]host[:port][,host[:port]…][?options]
//	rediss+sentinel://…, rediss+cluster://…  over TLS
//
// so the original design's redis://:123456@localhost:16379/0 is a
// password-only (pre-ACL) login to database 0. Hosts default to port 6379,
// Sentinels to 26379. A password with reserved characters (@ : / ? #)
// must be percent-encoded, as in any URL.
//
// The user and password of a Sentinel URL are the master's (and its
// replicas'); Sentinels that require a login of their own take it from the
// sentinel_username and sentinel_password options. A Cluster has only
// database 0. Several hosts may also be given go-redis's way, with
// repeated addr=host:port options.
//
// The options are go-redis's (ParseURL, ParseFailoverURL and
// ParseClusterURL): dial_timeout, read_timeout, pool_size, max_retries,
// client_name, skip_verify… Unknown options are an error.
//
// The client is a *goredis.Client for a single node, a Sentinel-backed
// *goredis.Client (a *goredis.ClusterClient with route_by_latency or
// route_randomly, which read from replicas), or a *goredis.ClusterClient.
// It connects lazily: a Redis that is down makes the first command fail,
// not NewClient. Errors never contain a password.
func NewClient(rawURL string) (goredis.UniversalClient, error) {
	o, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch {
	case o.failover != nil && (o.failover.RouteByLatency || o.failover.RouteRandomly):
		return goredis.NewFailoverClusterClient(o.failover), nil
	case o.failover != nil:
		return goredis.NewFailoverClient(o.failover), nil
	case o.cluster != nil:
		return goredis.NewClusterClient(o.cluster), nil
	default:
		return goredis.NewClient(o.single), nil
	}
}

// RedactURL returns rawURL with its passwords (the user info's and a
// sentinel_password option's) replaced by "xxxxx", fit for logs.
func RedactURL(rawURL string) string {
	return splitURL(rawURL).redacted()
}

// clientOptions holds exactly one of the three.
type clientOptions struct {
	single   *goredis.Options
	failover *goredis.FailoverOptions
	cluster  *goredis.ClusterOptions
}

// urlParts is a URL split by hand, so that the password never reaches a
// parser whose errors quote their input (net/url quotes the whole URL).
type urlParts struct {
	raw      string
	scheme   string // as written, lower-cased: "redis+sentinel"
	userinfo string // as written, without '@'
	hasUser  bool
	hosts    string // the authority after the user info: "h1:26379,h2"
	path     string // from the first '/' after the authority, without query
	query    string // without '?'
	hasQuery bool
}

// splitURL splits raw at its RFC 3986 landmarks: the authority runs from
// "://" to the first '/', '?' or '#'; the user info to its last '@'.
func splitURL(raw string) urlParts {
	p := urlParts{raw: raw}
	i := strings.Index(raw, "://")
	if i < 0 {
		p.path = raw
		return p
	}
	p.scheme = strings.ToLower(raw[:i])
	rest := raw[i+3:]
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		rest = rest[:h] // a fragment means nothing to Redis
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	rest = rest[end:]
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		p.userinfo, p.hasUser, auth = auth[:at], true, auth[at+1:]
	}
	p.hosts = auth
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		p.query, p.hasQuery, rest = rest[q+1:], true, rest[:q]
	}
	p.path = rest
	return p
}

// ambiguous reports an '@' outside the user info: most likely a password
// with an unencoded '/', '?' or '#', which moved the authority's end into
// it. Such a URL is never shown, not even in part.
func (p urlParts) ambiguous() bool {
	if p.scheme == "" {
		return false // not shown anyway
	}
	n := strings.Count(p.raw, "@")
	if p.hasUser {
		n--
	}
	return n > 0
}

// redacted reassembles the URL with every password replaced.
func (p urlParts) redacted() string {
	if p.scheme == "" {
		if strings.ContainsAny(p.raw, "@:") {
			return redacted // not a URL; it may be anything
		}
		return p.raw
	}
	if p.ambiguous() {
		return p.scheme + "://" + redacted
	}
	var b strings.Builder
	b.WriteString(p.scheme + "://")
	if p.hasUser {
		user, _, hasPass := strings.Cut(p.userinfo, ":")
		b.WriteString(user)
		if hasPass {
			b.WriteString(":" + redacted)
		}
		b.WriteByte('@')
	}
	b.WriteString(p.hosts + p.path)
	if p.hasQuery {
		pairs := strings.Split(p.query, "&")
		for i, kv := range pairs {
			k, _, ok := strings.Cut(kv, "=")
			if ok && isSecretOption(k) {
				pairs[i] = k + "=" + redacted
			}
		}
		b.WriteString("?" + strings.Join(pairs, "&"))
	}
	return b.String()
}

// secrets returns the strings no error may contain: the passwords as
// written and as decoded.
func (p urlParts) secrets() []string {
	var s []string
	add := func(v string) {
		if v == "" {
			return
		}
		s = append(s, v)
		if d, err := url.PathUnescape(v); err == nil && d != v {
			s = append(s, d)
		}
		if d, err := url.QueryUnescape(v); err == nil && d != v {
			s = append(s, d)
		}
	}
	if _, pass, ok := strings.Cut(p.userinfo, ":"); ok {
		add(pass)
	}
	for kv := range strings.SplitSeq(p.query, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && isSecretOption(k) {
			add(v)
		}
	}
	return s
}

func isSecretOption(k string) bool {
	if d, err := url.QueryUnescape(k); err == nil {
		k = d
	}
	return strings.Contains(strings.ToLower(k), "password")
}

// errorf returns an error about p's URL (shown redacted) with every
// password scrubbed from the message, whatever produced it.
func (p urlParts) errorf(format string, args ...any) error {
	if p.ambiguous() {
		return errors.New("redis: invalid URL; percent-encode the characters @ : / ? # in a user name or password")
	}
	msg := fmt.Sprintf("redis: URL %s: %s", p.redacted(), fmt.Sprintf(format, args...))
	for _, s := range p.secrets() {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return errors.New(msg)
}

// parseURL parses the URL forms NewClient accepts.
func parseURL(raw string) (*clientOptions, error) {
	p := splitURL(strings.TrimSpace(raw))
	if p.scheme == "" {
		return nil, p.errorf("want redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://")
	}
	base, mode, _ := strings.Cut(p.scheme, "+")
	if base != "redis" && base != "rediss" && !(base == "unix" && mode == "") {
		return nil, p.errorf("unsupported scheme %q", p.scheme)
	}
	user, pass, err := p.credentials()
	if err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(p.query)
	if err != nil {
		return nil, p.errorf("invalid query string")
	}
	for _, k := range []string{"password", "username", "master_name"} {
		if q.Has(k) {
			return nil, p.errorf("option %s is not accepted: the user and password go in the user info, the master name in the path", k)
		}
	}

	switch mode {
	case "":
		if base == "unix" {
			if p.hosts != "" {
				return nil, p.errorf("a unix:// URL has no host: unix:///path/to/redis.sock")
			}
			o, err := goredis.ParseURL("unix://" + p.path + encodeQuery(q))
			if err != nil {
				return nil, p.errorf("%s", cleanError(err))
			}
			o.Username, o.Password = user, pass
			return &clientOptions{single: o}, nil
		}
		hosts, err := p.hostList(defaultRedisPort)
		if err != nil {
			return nil, err
		}
		switch len(hosts) {
		case 0:
			hosts = []string{net.JoinHostPort("localhost", defaultRedisPort)}
		case 1:
		default:
			return nil, p.errorf("several hosts: name a Sentinel deployment with redis+sentinel:// or a Cluster with redis+cluster://")
		}
		o, err := goredis.ParseURL(base + "://" + hosts[0] + p.path + encodeQuery(q))
		if err != nil {
			return nil, p.errorf("%s", cleanError(err))
		}
		o.Username, o.Password = user, pass
		return &clientOptions{single: o}, nil

	case "sentinel":
		hosts, err := p.hostList(defaultSentinelPort)
		if err != nil {
			return nil, err
		}
		if len(hosts) == 0 {
			return nil, p.errorf("no Sentinel host")
		}
		segs := strings.FieldsFunc(p.path, func(r rune) bool { return r == '/' })
		if len(segs) == 0 || len(segs) > 2 {
			return nil, p.errorf("the path must be /master-name or /master-name/db")
		}
		master, err := url.PathUnescape(segs[0])
		if err != nil || master == "" {
			return nil, p.errorf("invalid master name")
		}
		db := "0"
		if len(segs) == 2 {
			db = segs[1]
		}
		sentinelUser, sentinelPass := q.Get("sentinel_username"), q.Get("sentinel_password")
		q.Del("sentinel_username")
		q.Del("sentinel_password")
		q.Set("master_name", master)
		addMoreHosts(q, hosts[1:])
		o, err := goredis.ParseFailoverURL(base + "://" + hosts[0] + "/" + db + encodeQuery(q))
		if err != nil {
			return nil, p.errorf("%s", cleanError(err))
		}
		o.Username, o.Password = user, pass
		o.SentinelUsername, o.SentinelPassword = sentinelUser, sentinelPass
		if o.TLSConfig != nil {
			// Verify each server by its own name, not the first
			// Sentinel's (tls.Dial takes it from the address).
			o.TLSConfig.ServerName = ""
		}
		return &clientOptions{failover: o}, nil

	case "cluster":
		hosts, err := p.hostList(defaultRedisPort)
		if err != nil {
			return nil, err
		}
		if len(hosts) == 0 {
			return nil, p.errorf("no Cluster host")
		}
		if db := strings.Trim(p.path, "/"); db != "" && db != "0" {
			return nil, p.errorf("a Redis Cluster has only database 0")
		}
		if q.Has("db") {
			return nil, p.errorf("a Redis Cluster has only database 0")
		}
		addMoreHosts(q, hosts[1:])
		o, err := goredis.ParseClusterURL(base + "://" + hosts[0] + encodeQuery(q))
		if err != nil {
			return nil, p.errorf("%s", cleanError(err))
		}
		o.Username, o.Password = user, pass
		if o.TLSConfig != nil {
			o.TLSConfig.ServerName = ""
		}
		return &clientOptions{cluster: o}, nil
	}
	return nil, p.errorf("unsupported scheme %q", p.scheme)
}

// credentials decodes the user info.
func (p urlParts) credentials() (user, pass string, err error) {
	if !p.hasUser {
		return "", "", nil
	}
	u, pw, _ := strings.Cut(p.userinfo, ":")
	if user, err = url.PathUnescape(u); err != nil {
		return "", "", p.errorf("invalid percent-encoding in the user name")
	}
	if pass, err = url.PathUnescape(pw); err != nil {
		return "", "", p.errorf("invalid percent-encoding in the password")
	}
	return user, pass, nil
}

// hostList returns the comma-separated hosts as host:port, with
// defaultPort where none is given. No hosts at all is an empty list.
func (p urlParts) hostList(defaultPort string) ([]string, error) {
	if p.hosts == "" {
		return nil, nil
	}
	var out []string
	for h := range strings.SplitSeq(p.hosts, ",") {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return nil, p.errorf("host %q: %s", h, err)
		}
		out = append(out, addr)
	}
	return out, nil
}

// hostPort validates one host[:port] (an IPv6 address in brackets).
func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("empty host")
	}
	host, port := h, ""
	switch {
	case strings.HasPrefix(h, "["):
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", errors.New("missing ']'")
		}
		host = h[1:end]
		switch after := h[end+1:]; {
		case after == "":
		case strings.HasPrefix(after, ":"):
			port = after[1:]
		default:
			return "", errors.New("unexpected text after ']'")
		}
	case strings.Count(h, ":") > 1:
		return "", errors.New("an IPv6 address must be in brackets")
	default:
		host, port, _ = strings.Cut(h, ":")
		if strings.HasSuffix(h, ":") && port == "" {
			return "", errors.New("empty port")
		}
	}
	if host == "" {
		return "", errors.New("empty host")
	}
	if port == "" {
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", errors.New("invalid port")
	}
	return net.JoinHostPort(host, port), nil
}

// addMoreHosts puts hosts in front of the addr options (go-redis's way to
// name more hosts), keeping the URL's order.
func addMoreHosts(q url.Values, hosts []string) {
	if len(hosts) > 0 {
		q["addr"] = append(append([]string(nil), hosts...), q["addr"]...)
	}
}

func encodeQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// cleanError is err's message without net/url's quoting of the URL
// (which holds no password here, but reads better without it).
func cleanError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return strings.TrimPrefix(err.Error(), "redis: ")
}
