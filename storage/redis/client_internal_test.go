package redis

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseURLSingle(t *testing.T) {
	for _, tc := range []struct {
		url                      string
		network, addr, user, pwd string
		db                       int
		tls                      string // ServerName; "" means no TLS
	}{
		// The original design's form: a password-only (pre-ACL) login.
		{url: "redis://:123456@localhost:16379/0", network: "tcp", addr: "localhost:16379", pwd: "123456"},
		{url: "redis://user:p%40ss%2Fw%3Ard@cache.internal/2", network: "tcp", addr: "cache.internal:6379", user: "user", pwd: "p@ss/w:rd", db: 2},
		{url: "redis://", network: "tcp", addr: "localhost:6379"},
		{url: "REDIS://127.0.0.1:6379/0", network: "tcp", addr: "127.0.0.1:6379"},
		{url: "redis://[::1]:7000/1", network: "tcp", addr: "[::1]:7000", db: 1},
		{url: "redis://[::1]", network: "tcp", addr: "[::1]:6379"},
		{url: "redis://h/0?db=4", network: "tcp", addr: "h:6379", db: 4},
		{url: "redis://:p@ss@h", network: "tcp", addr: "h:6379", pwd: "p@ss"},
		{url: "rediss://:pw@redis.example.com:6380", network: "tcp", addr: "redis.example.com:6380", pwd: "pw", tls: "redis.example.com"},
		{url: "unix:///run/redis.sock?db=3", network: "unix", addr: "/run/redis.sock", db: 3},
		{url: "unix://:pw@/run/redis.sock", network: "unix", addr: "/run/redis.sock", pwd: "pw"},
		{url: "  redis://h  ", network: "tcp", addr: "h:6379"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := parseURL(tc.url)
			require.NoError(t, err)
			require.NotNil(t, o.single)
			assert.Nil(t, o.failover)
			assert.Nil(t, o.cluster)
			s := o.single
			assert.Equal(t, tc.network, s.Network)
			assert.Equal(t, tc.addr, s.Addr)
			assert.Equal(t, tc.user, s.Username)
			assert.Equal(t, tc.pwd, s.Password)
			assert.Equal(t, tc.db, s.DB)
			if tc.tls == "" {
				assert.Nil(t, s.TLSConfig)
			} else if assert.NotNil(t, s.TLSConfig) {
				assert.Equal(t, tc.tls, s.TLSConfig.ServerName)
			}
		})
	}
}

func TestParseURLOptions(t *testing.T) {
	o, err := parseURL("redis://:pw@h:1/0?dial_timeout=3&read_timeout=250ms&pool_size=7&client_name=relay")
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, o.single.DialTimeout)
	assert.Equal(t, 250*time.Millisecond, o.single.ReadTimeout)
	assert.Equal(t, 7, o.single.PoolSize)
	assert.Equal(t, "relay", o.single.ClientName)
}

func TestParseURLSentinel(t *testing.T) {
	o, err := parseURL("redis+sentinel://:pw@h1:26379,h2,[fd00::1]:26380/mymaster/0")
	require.NoError(t, err)
	require.NotNil(t, o.failover)
	f := o.failover
	assert.Equal(t, "mymaster", f.MasterName)
	assert.Equal(t, []string{"h1:26379", "h2:26379", "[fd00::1]:26380"}, f.SentinelAddrs)
	assert.Equal(t, "", f.Username)
	assert.Equal(t, "pw", f.Password)
	assert.Equal(t, "", f.SentinelPassword, "the user info is the master's login")
	assert.Equal(t, 0, f.DB)
	assert.Nil(t, f.TLSConfig)

	o, err = parseURL("rediss+sentinel://app:pw@s1/my%20master/3?sentinel_username=sen&sentinel_password=s%26p&read_timeout=2s&addr=s9:1")
	require.NoError(t, err)
	f = o.failover
	assert.Equal(t, "my master", f.MasterName)
	assert.Equal(t, []string{"s1:26379", "s9:1"}, f.SentinelAddrs)
	assert.Equal(t, "app", f.Username)
	assert.Equal(t, "pw", f.Password)
	assert.Equal(t, "sen", f.SentinelUsername)
	assert.Equal(t, "s&p", f.SentinelPassword)
	assert.Equal(t, 3, f.DB)
	assert.Equal(t, 2*time.Second, f.ReadTimeout)
	if assert.NotNil(t, f.TLSConfig) {
		assert.Empty(t, f.TLSConfig.ServerName, "each server is verified by its own name")
	}

	o, err = parseURL("redis+sentinel://h/m?route_by_latency=true")
	require.NoError(t, err)
	assert.True(t, o.failover.RouteByLatency)
}

func TestParseURLCluster(t *testing.T) {
	o, err := parseURL("redis+cluster://:pw@h1:6379,h2:6380?addr=h3:6381&read_only=true")
	require.NoError(t, err)
	require.NotNil(t, o.cluster)
	c := o.cluster
	assert.Equal(t, []string{"h1:6379", "h2:6380", "h3:6381"}, c.Addrs)
	assert.Equal(t, "pw", c.Password)
	assert.True(t, c.ReadOnly)
	assert.Nil(t, c.TLSConfig)

	o, err = parseURL("rediss+cluster://u:pw@h1/0")
	require.NoError(t, err)
	c = o.cluster
	assert.Equal(t, []string{"h1:6379"}, c.Addrs)
	assert.Equal(t, "u", c.Username)
	if assert.NotNil(t, c.TLSConfig) {
		assert.Empty(t, c.TLSConfig.ServerName)
	}
}

func TestParseURLErrors(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	for _, tc := range []struct{ url, want string }{
		{"", "want redis://"},
		{"localhost:6379", "want redis://"},
		{"http://:" + secret + "@h", "unsupported scheme"},
		{"redis+foo://:" + secret + "@h", "unsupported scheme"},
		{"redis://:" + secret + "@h1,h2", "redis+cluster://"},
		{"redis://:" + secret + "@h:abc/0", "invalid port"},
		{"redis://:" + secret + "@h:99999", "invalid port"},
		{"redis://:" + secret + "@h:", "empty port"},
		{"redis://:" + secret + "@::1", "brackets"},
		{"redis://:" + secret + "@[::1/0", "missing ']'"},
		{"redis://:" + secret + "@h/x", "invalid database number"},
		{"redis://:" + secret + "@h/0/1", "invalid URL path"},
		{"redis://:" + secret + "@h/0?nope=1", "unexpected option: nope"},
		{"redis://:" + secret + "@h/0?dial_timeout=soon", "invalid dial_timeout duration"},
		{"redis://:" + secret + "@h/0?password=" + secret, "not accepted"},
		{"redis://:" + secret + "%zz@h", "percent-encoding in the password"},
		{"redis://:" + secret + "@h/0?a=%zz", "invalid query string"},
		{"unix://:" + secret + "@host/run/redis.sock", "has no host"},
		{"redis+sentinel://:" + secret + "@h1,h2", "master-name"},
		{"redis+sentinel://:" + secret + "@/m", "no Sentinel host"},
		{"redis+sentinel://:" + secret + "@h1,,h2/m", "empty host"},
		{"redis+sentinel://:" + secret + "@h1/m?sentinel_password=" + secret + "&bad=1", "unexpected option: bad"},
		{"redis+sentinel://h1/m?sentinel_password=" + secret + "&bad=1", "unexpected option: bad"},
		{"redis+cluster://:" + secret + "@h1/1", "only database 0"},
		{"redis+cluster://:" + secret + "@h1?db=1", "only database 0"},
		{"redis+cluster://:" + secret + "@", "no Cluster host"},
		// Unencoded reserved characters in the password: the URL's
		// structure is unknown, so nothing of it is shown.
		{"redis://:" + secret + "/x@h:6379/0", "percent-encode"},
		{"redis://:" + secret + "?x@h:6379/0", "percent-encode"},
		{"redis://:" + secret + "#x@h:6379/0", "percent-encode"},
		{"redis:/:" + secret + "@h", "want redis://"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := parseURL(tc.url)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), secret)
			assert.NotContains(t, err.Error(), secret[:6], "not even in part")
			_, err = NewClient(tc.url)
			require.Error(t, err)
		})
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"redis://:123456@localhost:16379/0", "redis://:xxxxx@localhost:16379/0"},
		{"redis://user:pw@h/0?dial_timeout=3", "redis://user:xxxxx@h/0?dial_timeout=3"},
		{"redis://user@h", "redis://user@h"},
		{"redis://h:6379", "redis://h:6379"},
		{"redis+sentinel://:pw@h1,h2/m/0?sentinel_password=sp&x=1", "redis+sentinel://:xxxxx@h1,h2/m/0?sentinel_password=xxxxx&x=1"},
		{"redis://:pw/x@h/0", "redis://xxxxx"},
		{"h:1:pw@x", "xxxxx"},
	} {
		assert.Equal(t, tc.want, RedactURL(tc.in), tc.in)
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"h", "h:6379"},
		{"h:1", "h:1"},
		{"10.0.0.1:6380", "10.0.0.1:6380"},
		{"[::1]", "[::1]:6379"},
		{"[fd00::2]:7000", "[fd00::2]:7000"},
	} {
		got, err := hostPort(tc.in, "6379")
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got)
	}
	for _, in := range []string{"", ":1", "h:0", "h:x", "[::1]x", "[]:1", "a:b:c"} {
		_, err := hostPort(in, "6379")
		assert.Error(t, err, in)
	}
}
