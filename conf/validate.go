package conf

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/robfig/cron/v3"
	"golang.org/x/crypto/bcrypt"
)

// build validates a raw configuration that withDefaults has completed and
// converts it; relative paths are taken relative to base. Problems are
// collected in c; the result is meaningful only when there are none.
func (c *checker) build(r *rawConfig, base string) *Config {
	cfg := &Config{}
	c.server(r, base, &cfg.Server)
	c.storage(&r.Storage, base, &cfg.Storage)
	cfg.Users = c.users(r.Users)
	if r.S3 != nil && !c.bad["s3"] {
		cfg.S3 = c.s3(r.S3, base)
	}
	cfg.Mirrors = c.mirrors(r.Mirrors, base, r.S3 != nil)
	cfg.Perms = c.perms(r.Perms, base)
	cfg.HTTP.Listen = c.listen(r.HTTP.Listen, "http.listen")
	cfg.Alerts = c.alerts(&r.Alerts, base)
	cfg.Log = c.log(&r.Log)
	c.stateDir(cfg)
	return cfg
}

func (c *checker) server(r *rawConfig, base string, s *Server) {
	rs := &r.Server
	s.Listen = c.listen(rs.Listen, "server.listen")
	if h, ok := c.text(rs.PublicHost, "server.public_host"); ok && h != "" {
		if net.ParseIP(h) == nil && !validHostname(h) {
			c.add("server.public_host", "%q: not an IP address or host name", h)
		}
		s.PublicHost = h
	}
	s.PassivePorts = c.portRange(rs.PassivePorts, "server.passive_ports")
	s.IdleTimeout = c.duration(rs.IdleTimeout, "server.idle_timeout", false)
	s.LoginTimeout = c.duration(rs.LoginTimeout, "server.login_timeout", false)
	s.ShutdownGrace = c.duration(rs.ShutdownGrace, "server.shutdown_grace", true)
	s.MaxConnections = c.integer(rs.MaxConnections, "server.max_connections", 1, math.MaxInt32)
	s.MaxConnectionsPerIP = c.integer(rs.MaxConnectionsPerIP, "server.max_connections_per_ip", 1, math.MaxInt32)
	s.ActiveMode, _ = get(c, rs.ActiveMode, "server.active_mode", "a boolean")
	if b, ok := c.text(rs.Banner, "server.banner"); ok {
		if strings.ContainsFunc(b, unicode.IsControl) {
			c.add("server.banner", "%q: must be one line without control characters", b)
		}
		s.Banner = b
	}

	s.TLS.Mode = TLSMode(c.oneOf(r.TLS.Mode, "server.tls.mode",
		string(TLSOff), string(TLSExplicit), string(TLSRequired), string(TLSImplicit)))
	s.TLS.Cert = c.path(r.TLS.Cert, "server.tls.cert", base)
	s.TLS.Key = c.path(r.TLS.Key, "server.tls.key", base)
	if s.TLS.Mode != TLSOff && s.TLS.Mode != "" {
		for _, f := range []struct {
			key string
			val string
		}{{"server.tls.cert", s.TLS.Cert}, {"server.tls.key", s.TLS.Key}} {
			if f.val == "" {
				c.add(f.key, "required when server.tls.mode is %q", s.TLS.Mode)
			}
		}
	}

	s.Ban.MaxFailures = c.integer(r.Ban.MaxFailures, "server.ban.max_failures", 1, math.MaxInt32)
	s.Ban.Window = c.duration(r.Ban.Window, "server.ban.window", false)
	s.Ban.Duration = c.duration(r.Ban.Duration, "server.ban.duration", false)
}

func (c *checker) storage(r *rawStorage, base string, s *Storage) {
	s.Root = c.requiredPath(r.Root, "storage.root", base)
	s.StateDir = c.requiredPath(r.StateDir, "storage.state_dir", base)
	if u, ok := c.text(r.Uploads, "storage.uploads"); ok {
		if err := confine(u); err != nil {
			c.add("storage.uploads", "%q: %v", u, err)
		}
		s.Uploads = path.Clean(u)
	}
	s.Group, s.GID = c.group(r.Group, "storage.group")
	s.FileMode, _ = c.mode(r.FileMode, "storage.file_mode", true)
	var ok bool
	if s.DirMode, ok = c.mode(r.DirMode, "storage.dir_mode", false); ok && s.DirMode.Perm()&0o700 != 0o700 {
		c.add("storage.dir_mode", "%q: the owner needs rwx (0700) to create files in the directories ftpgate makes", r.DirMode.V)
	}
	s.ResumeTTL = c.duration(r.ResumeTTL, "storage.resume_ttl", false)
	s.Fsync, _ = get(c, r.Fsync, "storage.fsync", "a boolean")
	if n := c.integer(r.CommitLog, "storage.commit_log", 0, 4096); n > 0 {
		s.CommitLog = int64(n) << 20
	}
}

func (c *checker) users(rs []rawUser) []User {
	users := make([]User, 0, len(rs))
	names := make(map[string]int)
	for i, r := range rs {
		key := fmt.Sprintf("users[%d]", i)
		var u User
		u.Name = c.name(r.Name, "users", i, names)
		if h, ok := c.required(r.PasswordHash, key+".password_hash"); ok {
			if !isBcrypt(h) {
				c.add(key+".password_hash", "not a bcrypt hash; make one with `ftpgate passwd`")
			}
			u.PasswordHash = h
		}
		if !r.Role.Set {
			c.add(key+".role", "required: admin, uploader or reader")
		} else {
			u.Role = Role(c.oneOf(r.Role, key+".role", string(RoleAdmin), string(RoleUploader), string(RoleReader)))
		}
		if h, ok := c.text(r.Home, key+".home"); ok {
			// A default home is built from a checked name and uploads directory.
			if err := confine(h); err != nil && r.Home.Set {
				c.add(key+".home", "%q: %v", h, err)
			}
			u.Home = path.Clean(h)
		}
		users = append(users, u)
	}
	return users
}

func (c *checker) s3(r *rawS3, base string) *S3 {
	s := &S3{}
	if ep, ok := c.required(r.Endpoint, "s3.endpoint"); ok {
		if err := checkEndpoint(ep); err != nil {
			c.add("s3.endpoint", "%q: %v", ep, err)
		}
		s.Endpoint = ep
	}
	s.Secure, _ = get(c, r.Secure, "s3.secure", "a boolean")
	s.Region, _ = c.text(r.Region, "s3.region")
	s.AccessKey, _ = c.required(r.AccessKey, "s3.access_key")
	if r.SecretKey.Set {
		c.add("s3.secret_key", "inline secrets are not allowed; put the key in a file named by secret_key_file, or in $%s", EnvS3SecretKey)
	}
	if key, ok := c.secret(r.SecretKeyFile, "s3.secret_key_file", EnvS3SecretKey, base); ok {
		if key == "" && !r.SecretKey.Set {
			c.add("s3", "no secret key: set secret_key_file or $%s", EnvS3SecretKey)
		}
		s.SecretKey = key
	}
	return s
}

// secret reads the secret in the file named by v, or when v is unset or ""
// the environment variable env. ok is false when an issue was reported.
func (c *checker) secret(v value[string], key, env, base string) (secret string, ok bool) {
	file, ok := c.text(v, key)
	if !ok {
		return "", false
	}
	if file == "" {
		s, _ := c.lookupEnv(env)
		return strings.TrimSpace(s), true
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(base, file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		c.add(key, "%v", err)
		return "", false
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		c.add(key, "%q is empty", v.V)
		return "", false
	}
	return s, true
}

func (c *checker) mirrors(rs []rawMirror, base string, haveS3 bool) []Mirror {
	if len(rs) > 0 && !haveS3 {
		c.add("mirror", "[[mirror]] needs an [s3] section")
	}
	ms := make([]Mirror, 0, len(rs))
	names := make(map[string]int)
	for i, r := range rs {
		key := fmt.Sprintf("mirror[%d]", i)
		var m Mirror
		m.Name = c.name(r.Name, "mirror", i, names)
		m.Local = c.requiredPath(r.Local, key+".local", base)
		if b, ok := c.required(r.Bucket, key+".bucket"); ok {
			if !validBucket(b) {
				c.add(key+".bucket", "%q: not a bucket name (3-63 lowercase letters, digits, dots and hyphens)", b)
			}
			m.Bucket = b
		}
		if p, ok := c.text(r.Prefix, key+".prefix"); ok {
			switch {
			case strings.HasPrefix(p, "/"):
				c.add(key+".prefix", "%q: must not start with /", p)
			case p != "" && !strings.HasSuffix(p, "/"):
				p += "/" // "backup" must not also cover "backup2/"
			}
			m.Prefix = p
		}
		m.Remove, _ = get(c, r.Remove, key+".remove", "a boolean")
		if p, ok := c.text(r.Pull, key+".pull"); ok && p != "" {
			if _, err := cron.ParseStandard(p); err != nil {
				c.add(key+".pull", "%q: not a cron schedule: %v", p, err)
			}
			m.Pull = p
		}
		m.Reconcile = c.duration(r.Reconcile, key+".reconcile", false)
		m.Exclude = c.patterns(r.Exclude, key+".exclude")
		m.MaxDelete = c.integer(r.MaxDelete, key+".max_delete", 0, math.MaxInt32)
		m.MaxDeleteRatio = c.float(r.MaxDeleteRatio, key+".max_delete_ratio", "above 0 and at most 1",
			func(f float64) bool { return f > 0 && f <= 1 })
		for j, o := range ms {
			if m.Bucket != "" && o.Bucket == m.Bucket &&
				(strings.HasPrefix(m.Prefix, o.Prefix) || strings.HasPrefix(o.Prefix, m.Prefix)) {
				c.add(key+".prefix", "%q in bucket %q overlaps mirror[%d]'s prefix %q", m.Prefix, m.Bucket, j, o.Prefix)
			}
		}
		ms = append(ms, m)
	}
	return ms
}

func (c *checker) perms(rs []rawPerms, base string) []Perms {
	ps := make([]Perms, 0, len(rs))
	paths := make(map[string]int)
	for i, r := range rs {
		key := fmt.Sprintf("perms[%d]", i)
		var p Perms
		p.Path = c.requiredPath(r.Path, key+".path", base)
		if p.Path != "" {
			if j, dup := paths[p.Path]; dup {
				c.add(key+".path", "%q: duplicate; perms[%d] has the same path", r.Path.V, j)
			} else {
				paths[p.Path] = i
			}
		}
		p.Owner, p.UID = c.owner(r.Owner, key+".owner")
		p.Group, p.GID = c.group(r.Group, key+".group")
		if r.FileMode.Set {
			p.FileMode, _ = c.mode(r.FileMode, key+".file_mode", true)
			p.HasFileMode = true
		}
		if r.DirMode.Set {
			p.DirMode, _ = c.mode(r.DirMode, key+".dir_mode", false)
			p.HasDirMode = true
		}
		p.Exclude = c.patterns(r.Exclude, key+".exclude")
		p.AfterMirror, _ = get(c, r.AfterMirror, key+".after_mirror", "a boolean")
		p.Rate = c.float(r.Rate, key+".rate", "at least 0 (operations per second; 0 = unlimited)",
			func(f float64) bool { return f >= 0 && !math.IsInf(f, 0) })
		if !r.Owner.Set && !r.Group.Set && !r.FileMode.Set && !r.DirMode.Set {
			c.add(key, "sets nothing: give owner, group, file_mode or dir_mode")
		}
		ps = append(ps, p)
	}
	return ps
}

func (c *checker) alerts(r *rawAlerts, base string) Alerts {
	var a Alerts
	if u, ok := c.text(r.WebhookURL, "alerts.webhook_url"); ok && u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			c.add("alerts.webhook_url", "%q: not an http:// or https:// URL", u)
		}
		a.WebhookURL = u
	}
	if r.TelegramToken.Set {
		c.add("alerts.telegram_token", "inline secrets are not allowed; put the token in a file named by telegram_token_file, or in $%s", EnvTelegramToken)
	}
	token, ok := c.secret(r.TelegramTokenFile, "alerts.telegram_token_file", EnvTelegramToken, base)
	a.TelegramToken = token
	a.TelegramChatID, _ = c.text(r.TelegramChatID, "alerts.telegram_chat_id")
	switch {
	case token != "" && a.TelegramChatID == "":
		c.add("alerts.telegram_chat_id", "required with a Telegram token")
	case ok && token == "" && a.TelegramChatID != "":
		c.add("alerts.telegram_token_file", "required with telegram_chat_id (or set $%s)", EnvTelegramToken)
	}
	a.LoadMax = c.float(r.LoadMax, "alerts.load_max", "above 0", func(f float64) bool { return f > 0 })
	a.SwapMaxRatio = c.float(r.SwapMaxRatio, "alerts.swap_max_ratio", "above 0 and at most 1",
		func(f float64) bool { return f > 0 && f <= 1 })
	a.DiskMinFreeRatio = c.float(r.DiskMinFreeRatio, "alerts.disk_min_free_ratio", "at least 0 and below 1",
		func(f float64) bool { return f >= 0 && f < 1 })
	a.MirrorLagMax = c.duration(r.MirrorLagMax, "alerts.mirror_lag_max", false)
	return a
}

func (c *checker) log(r *rawLog) Log {
	var l Log
	l.Format = LogFormat(c.oneOf(r.Format, "log.format", string(LogText), string(LogJSON)))
	if s, ok := c.text(r.Level, "log.level"); ok {
		if err := l.Level.UnmarshalText([]byte(s)); err != nil {
			c.add("log.level", "%q: must be debug, info, warn or error", s)
			l.Level = slog.LevelInfo
		}
	}
	return l
}

// name checks the name of entry i of the array of tables array; seen maps
// the names so far to their entries.
func (c *checker) name(v value[string], array string, i int, seen map[string]int) string {
	key := fmt.Sprintf("%s[%d].name", array, i)
	name, ok := c.required(v, key)
	if !ok {
		return ""
	}
	if err := checkName(name); err != nil {
		c.add(key, "%q: %v", name, err)
	} else if j, dup := seen[name]; dup {
		c.add(key, "%q: duplicate; %s[%d] has the same name", name, array, j)
	} else {
		seen[name] = i
	}
	return name
}

// stateDir checks that the journal never lands in a tree that is served or
// mirrored: it would be uploaded, and a restore would overwrite it.
func (c *checker) stateDir(cfg *Config) {
	st := cfg.Storage.StateDir
	if st == "" {
		return
	}
	if cfg.Storage.Root != "" && within(cfg.Storage.Root, st) {
		c.add("storage.state_dir", "%q is inside storage.root %q", st, cfg.Storage.Root)
	}
	for i, m := range cfg.Mirrors {
		if m.Local != "" && within(m.Local, st) {
			c.add("storage.state_dir", "%q is inside mirror[%d].local %q", st, i, m.Local)
		}
	}
}

// within reports whether p is dir or below it. Both are clean and absolute.
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// confine checks a path that must stay inside storage.root.
func confine(p string) error {
	switch c := path.Clean(p); {
	case p == "":
		return fmt.Errorf("must not be empty")
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("contains a NUL byte")
	case path.IsAbs(p):
		return fmt.Errorf("must be relative to storage.root")
	case c == ".." || strings.HasPrefix(c, "../"):
		return fmt.Errorf("leaves storage.root")
	}
	return nil
}

// checkName accepts the names of users and mirrors: they appear in paths,
// logs, metrics labels and command lines.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("longer than 64 bytes")
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("must not start with %q", name[:1])
	}
	for _, r := range name {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || strings.ContainsRune("._-@+", r)) {
			return fmt.Errorf("may contain only ASCII letters, digits and . _ - @ +")
		}
	}
	return nil
}

// isBcrypt reports whether h is a complete bcrypt hash: $2a$10$ followed by
// 53 characters of bcrypt's base64 alphabet.
func isBcrypt(h string) bool {
	if len(h) != 60 {
		return false
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return false
	}
	for _, r := range h[7:] {
		if !(r == '.' || r == '/' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func checkEndpoint(ep string) error {
	if strings.Contains(ep, "://") {
		return fmt.Errorf("write host:port without a scheme; secure = true selects https")
	}
	if strings.ContainsAny(ep, "/?#") {
		return fmt.Errorf("write host:port without a path")
	}
	host := ep
	if h, port, err := net.SplitHostPort(ep); err == nil {
		if !validPort(port, 1) {
			return fmt.Errorf("port must be a number between 1 and 65535")
		}
		host = h
	}
	if net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("not a host or host:port")
	}
	return nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// validBucket follows the S3 bucket naming rules.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 || strings.Contains(b, "..") || net.ParseIP(b) != nil {
		return false
	}
	for i, r := range b {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && ((r != '.' && r != '-') || i == 0 || i == len(b)-1) {
			return false
		}
	}
	return true
}
