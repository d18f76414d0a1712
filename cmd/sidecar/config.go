package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is the sidecar's whole configuration. Each field's comment says
// what its zero value means; parseConfig fills the documented defaults.
type Config struct {
	// MasterKey is the admin credential. Empty after parsing means "load the
	// one kept in DataDir, or generate and keep one".
	MasterKey string
	// DatabaseURL selects the store: a postgres:// (or postgresql://) URL
	// selects Postgres; empty selects the embedded SQLite store in DataDir.
	DatabaseURL string
	// DataDir holds the embedded database and a generated master key.
	DataDir string
	// GRPCAddr is the ext_authz gRPC listen address: host:port or
	// unix:///path/to/socket.
	GRPCAddr string
	// HTTPAddr is the management API, health and metrics listen address.
	HTTPAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel slog.Level
	// LogFormat is json or text.
	LogFormat string

	// CacheMaxKeys bounds the number of keys the Check keeps in memory.
	CacheMaxKeys int
	// NegativeTTL is how long an unknown key is remembered as unknown.
	NegativeTTL time.Duration
	// CacheTTL is the safety TTL after which a cached key is reloaded even
	// without an invalidation.
	CacheTTL time.Duration
	// LookupTimeout bounds one store lookup made by the Check on a cache miss.
	LookupTimeout time.Duration
	// KeyHeader, when set, is the only header the Check reads the key from,
	// replacing LiteLLM's list.
	KeyHeader string
	// ModelHeader, when set, names a request header that carries a model;
	// like every model the request names, it must be allowed.
	ModelHeader string
	// ModelAliasesResolved lets a key's aliases grant access to the alias
	// name, for deployments where something downstream (a LiteLLM proxy or
	// router) resolves aliases. false: the requested name must be allowed.
	ModelAliasesResolved bool
	// IdentityHeaderPrefix prefixes the identity headers set on allow.
	IdentityHeaderPrefix string
	// AccessGroupsFile is a JSON file {"group": ["model", ...]}; empty = none.
	AccessGroupsFile string
	// MaxBodyBytes caps management request bodies and the gRPC message size.
	MaxBodyBytes int64
	// TrustForwarded makes the HTTP authz mode read the original method and
	// URI from X-Forwarded-* / X-Original-* headers.
	TrustForwarded bool
	// BudgetResetInterval is how often keys past budget_reset_at are reset.
	BudgetResetInterval time.Duration
	// ShutdownTimeout bounds the graceful drain on SIGTERM.
	ShutdownTimeout time.Duration
	// ShutdownDelay is how long the sidecar keeps serving while reporting
	// not ready, before it starts draining (lets load balancers notice).
	ShutdownDelay time.Duration
}

// errHelp is returned when -h/--help was asked for; usage was printed.
var errHelp = flag.ErrHelp

// parseConfig reads flags, falling back to environment variables, then to
// defaults, and validates everything at once.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(io.Discard)

	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	str := func(p *string, name, def, help string, envs ...string) {
		v := env(envs...)
		if v == "" {
			v = def
		}
		fs.StringVar(p, name, v, help+envHelp(envs))
	}
	var envErrs []error
	dur := func(p *time.Duration, name string, def time.Duration, help string, envName string) {
		v := def
		if s := getenv(envName); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: %w", envName, err))
			} else {
				v = d
			}
		}
		fs.DurationVar(p, name, v, help+envHelp([]string{envName}))
	}
	integer := func(p *int64, name string, def int64, help string, envName string) {
		v := def
		if s := getenv(envName); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: invalid integer %q", envName, s))
			} else {
				v = n
			}
		}
		fs.Int64Var(p, name, v, help+envHelp([]string{envName}))
	}

	var logLevel string
	var cacheMax int64
	str(&c.MasterKey, "master-key", "", "admin key for the management API and the data plane; generated and kept in the data dir when empty", "SIDECAR_MASTER_KEY", "LITELLM_MASTER_KEY")
	str(&c.DatabaseURL, "database-url", "", "postgres:// URL of the key database; empty = embedded store in the data dir", "DATABASE_URL")
	str(&c.DataDir, "data-dir", "./data", "directory for the embedded store and the generated master key", "SIDECAR_DATA_DIR")
	str(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9001", "ext_authz gRPC listen address (host:port or unix:///path)", "SIDECAR_GRPC_ADDR")
	str(&c.HTTPAddr, "http-addr", "127.0.0.1:4000", "management API, health and metrics listen address", "SIDECAR_HTTP_ADDR")
	str(&logLevel, "log-level", "info", "debug, info, warn or error", "SIDECAR_LOG_LEVEL")
	str(&c.LogFormat, "log-format", "json", "json or text", "SIDECAR_LOG_FORMAT")
	integer(&cacheMax, "cache-max-keys", 100000, "keys the Check keeps in memory", "SIDECAR_CACHE_MAX_KEYS")
	dur(&c.NegativeTTL, "negative-ttl", 5*time.Second, "how long an unknown key is remembered as unknown", "SIDECAR_NEGATIVE_TTL")
	dur(&c.CacheTTL, "cache-ttl", 5*time.Minute, "safety TTL of a cached key (invalidation is by change feed; this bounds staleness if a notification is ever lost)", "SIDECAR_CACHE_TTL")
	dur(&c.LookupTimeout, "lookup-timeout", 500*time.Millisecond, "bound on one store lookup made by the Check on a cache miss", "SIDECAR_LOOKUP_TIMEOUT")
	str(&c.KeyHeader, "key-header", "", "read the key only from this header instead of LiteLLM's list", "SIDECAR_KEY_HEADER")
	str(&c.ModelHeader, "model-header", "", "header carrying a model; checked like every other place a model is named", "SIDECAR_MODEL_HEADER")
	aliases := env("SIDECAR_MODEL_ALIASES_RESOLVED") == "true" || env("SIDECAR_MODEL_ALIASES_RESOLVED") == "1"
	fs.BoolVar(&c.ModelAliasesResolved, "model-aliases-resolved", aliases, "a key's aliases grant access to the alias name (set only when a LiteLLM proxy or router upstream resolves aliases)"+envHelp([]string{"SIDECAR_MODEL_ALIASES_RESOLVED"}))
	str(&c.IdentityHeaderPrefix, "identity-header-prefix", "x-litellm-", "prefix of the identity headers set upstream on allow", "SIDECAR_IDENTITY_HEADER_PREFIX")
	str(&c.AccessGroupsFile, "access-groups-file", "", `JSON file of model access groups {"group": ["model", ...]}`, "SIDECAR_ACCESS_GROUPS_FILE")
	integer(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "cap on management request bodies and on the request body the Check reads", "SIDECAR_MAX_BODY_BYTES")
	trust := env("SIDECAR_TRUST_FORWARDED") == "true" || env("SIDECAR_TRUST_FORWARDED") == "1"
	fs.BoolVar(&c.TrustForwarded, "trust-forwarded", trust, "HTTP authz mode: take the original method/URI from X-Forwarded-*/X-Original-* (enable only behind a local proxy)"+envHelp([]string{"SIDECAR_TRUST_FORWARDED"}))
	dur(&c.BudgetResetInterval, "budget-reset-interval", time.Minute, "how often keys past budget_reset_at are reset", "SIDECAR_BUDGET_RESET_INTERVAL")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "bound on the graceful drain", "SIDECAR_SHUTDOWN_TIMEOUT")
	dur(&c.ShutdownDelay, "shutdown-delay", 0, "keep serving while not ready for this long before draining", "SIDECAR_SHUTDOWN_DELAY")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(usage, "Usage: sidecar [flags]\n\nFlags (each falls back to the environment variable named):")
			fs.SetOutput(usage)
			fs.PrintDefaults()
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	errs := envErrs
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", logLevel))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format: %q is not json or text", c.LogFormat))
	}
	if cacheMax < 1 || cacheMax > 1<<31 {
		errs = append(errs, fmt.Errorf("--cache-max-keys: %d is not between 1 and 2^31", cacheMax))
	} else {
		c.CacheMaxKeys = int(cacheMax)
	}
	if c.DatabaseURL != "" {
		if err := validateDatabaseURL(c.DatabaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: must not be empty"))
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", c.GRPCAddr}, {"--http-addr", c.HTTPAddr}} {
		if err := validateAddr(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	if strings.HasPrefix(c.HTTPAddr, "unix://") {
		errs = append(errs, errors.New("--http-addr: unix sockets are supported for --grpc-addr only"))
	}
	if c.GRPCAddr == c.HTTPAddr && !strings.HasSuffix(c.GRPCAddr, ":0") { // port 0: each gets its own
		errs = append(errs, fmt.Errorf("--grpc-addr and --http-addr are both %s", c.GRPCAddr))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		zero bool // zero allowed
	}{
		{"--negative-ttl", c.NegativeTTL, false}, {"--cache-ttl", c.CacheTTL, false},
		{"--lookup-timeout", c.LookupTimeout, false}, {"--budget-reset-interval", c.BudgetResetInterval, false},
		{"--shutdown-timeout", c.ShutdownTimeout, false}, {"--shutdown-delay", c.ShutdownDelay, true},
	} {
		if d.v < 0 || (!d.zero && d.v == 0) {
			errs = append(errs, fmt.Errorf("%s: %s must be positive", d.flag, d.v))
		}
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("--max-body-bytes: %d is below the 1024-byte minimum", c.MaxBodyBytes))
	}
	if c.KeyHeader != "" && !validHeaderName(c.KeyHeader) {
		errs = append(errs, fmt.Errorf("--key-header: %q is not a valid header name", c.KeyHeader))
	}
	if c.ModelHeader != "" && !validHeaderName(c.ModelHeader) {
		errs = append(errs, fmt.Errorf("--model-header: %q is not a valid header name", c.ModelHeader))
	}
	if !validHeaderName(strings.TrimSuffix(c.IdentityHeaderPrefix, "-") + "-x") {
		errs = append(errs, fmt.Errorf("--identity-header-prefix: %q does not make valid header names", c.IdentityHeaderPrefix))
	}
	c.KeyHeader = strings.ToLower(c.KeyHeader)
	c.ModelHeader = strings.ToLower(c.ModelHeader)
	c.IdentityHeaderPrefix = strings.ToLower(c.IdentityHeaderPrefix)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func envHelp(envs []string) string {
	if len(envs) == 0 {
		return ""
	}
	return " [$" + strings.Join(envs, ", $") + "]"
}

func validateDatabaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("--database-url: not a URL (%s)", redactParseError(err))
	}
	switch u.Scheme {
	case "postgres", "postgresql":
	default:
		return fmt.Errorf("--database-url: scheme %q is not postgres:// (leave it empty for the embedded store)", u.Scheme)
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("--database-url: no host")
	}
	return nil
}

// redactParseError drops the URL (which may hold a password) from a
// url.Parse error.
func redactParseError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return "unparseable"
}

func validateAddr(a string) error {
	if p, ok := strings.CutPrefix(a, "unix://"); ok {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%q: unix socket path must be absolute (unix:///path)", a)
		}
		return nil
	}
	host, port, err := splitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	_ = host
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", a, port)
	}
	return nil
}

func splitHostPort(a string) (host, port string, err error) {
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return "", "", errors.New("missing port (want host:port)")
	}
	host, port = a[:i], a[i+1:]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return "", "", errors.New("unbalanced brackets")
	}
	return host, port, nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// ensureDataDir creates dir if needed and proves it is writable.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, pathErr(err))
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, pathErr(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// pathErr strips the path from an *os.PathError, whose message our own
// wrapping already names.
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
