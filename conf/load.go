package conf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultPath is the configuration file used when neither --config nor
// $FTPGATE_CONFIG names one.
const DefaultPath = "/etc/ftpgate/ftpgate.toml"

// Environment variables read by ftpgate.
const (
	// EnvConfig names the configuration file when --config is not given.
	EnvConfig = "FTPGATE_CONFIG"
	// EnvS3SecretKey holds the S3 secret key when [s3] has no secret_key_file.
	EnvS3SecretKey = "FTPGATE_S3_SECRET_KEY"
	// EnvTelegramToken holds the Telegram bot token when [alerts] has no
	// telegram_token_file.
	EnvTelegramToken = "FTPGATE_TELEGRAM_TOKEN"
	// EnvAdminPassword is the admin password of the embedded default
	// configuration. main reads it and passes its hash to Default.
	EnvAdminPassword = "FTPGATE_ADMIN_PASSWORD"
)

// Issue is one problem in a configuration file.
type Issue struct {
	Key  string // dotted, with array indices: "users[2].home"; "" for syntax errors
	Line int    // 1-based; 0 when the key is not in the file (a required key)
	Msg  string
}

// Error is every problem Parse found in one file, in file order. Load and
// Parse return it as *Error; it is not modified after it is returned.
type Error struct {
	Name   string // the file, as given to Load or Parse
	Issues []Issue
}

// Error prints one line per issue: "ftpgate.toml:12: server.passive_ports: …".
func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = "config"
	}
	var b strings.Builder
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(name)
		if is.Line > 0 {
			fmt.Fprintf(&b, ":%d", is.Line)
		}
		b.WriteString(": ")
		if is.Key != "" {
			b.WriteString(is.Key)
			b.WriteString(": ")
		}
		b.WriteString(is.Msg)
	}
	return b.String()
}

// Resolve picks the configuration file: the --config flag value, else
// $FTPGATE_CONFIG, else DefaultPath. explicit is false only for DefaultPath,
// so that main can fall back to Default when that file does not exist.
func Resolve(flagValue string) (path string, explicit bool) {
	if flagValue != "" {
		return flagValue, true
	}
	if p := os.Getenv(EnvConfig); p != "" {
		return p, true
	}
	return DefaultPath, false
}

// Load reads and validates the configuration file at path. A missing file
// is an error that wraps fs.ErrNotExist; an invalid one is an *Error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse validates a configuration file's contents. name is used in messages
// and as Config.Path, and relative paths in the file are taken relative to
// its directory. Secret files named in it are read, and $FTPGATE_S3_SECRET_KEY
// and $FTPGATE_TELEGRAM_TOKEN are consulted. Every problem is reported in one
// *Error.
func Parse(data []byte, name string) (*Config, error) {
	var f rawFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{Name: name, Issues: []Issue{{Key: pe.LastKey, Line: pe.Position.Line, Msg: pe.Message}}}
		}
		return nil, fmt.Errorf("decode config %s: %w", name, err)
	}

	base, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	c := newChecker(scanPositions(data), os.LookupEnv)
	r := c.decode(&md, &f)
	c.unknownKeys(&md)
	withDefaults(r)
	cfg := c.build(r, base)
	if len(c.issues) > 0 {
		return nil, c.err(name)
	}
	cfg.Path = name
	return cfg, nil
}

// Default is the embedded configuration that `ftpgate serve` runs when no
// file exists: data in ./ftpgate-data and state in ./ftpgate-state (made
// absolute against the current directory), FTP on 127.0.0.1:2121 with passive
// ports 30000-30099, HTTP on 127.0.0.1:9021, one admin user "admin" with the
// given bcrypt hash, and no S3, so mirroring is off. The hash is taken as
// given: main makes it with bcrypt itself.
func Default(adminPasswordHash string) *Config {
	base, err := os.Getwd()
	if err != nil {
		base = "." // the paths stay relative; nothing better is known
	}
	r := defaultRaw(adminPasswordHash)
	withDefaults(r)
	c := newChecker(&positions{}, func(string) (string, bool) { return "", false })
	// Nothing above can fail validation but the hash, which is main's.
	return c.build(r, base)
}

// defaultRaw is the embedded default as if it had been read from a file.
func defaultRaw(adminPasswordHash string) *rawConfig {
	return &rawConfig{
		Server: rawServer{
			Listen:       given("127.0.0.1:2121"),
			PassivePorts: given("30000-30099"),
		},
		Storage: rawStorage{
			Root:     given("ftpgate-data"),
			StateDir: given("ftpgate-state"),
		},
		Users: []rawUser{{
			Name:         given("admin"),
			PasswordHash: given(adminPasswordHash),
			Role:         given(string(RoleAdmin)),
			Home:         given("."),
		}},
		HTTP: rawHTTP{Listen: given("127.0.0.1:9021")},
	}
}

// err returns the collected issues in file order; issues without a line
// (keys missing from the file) come last.
func (c *checker) err(name string) *Error {
	is := append([]Issue(nil), c.issues...)
	sort.SliceStable(is, func(i, j int) bool {
		li, lj := is[i].Line, is[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
	return &Error{Name: name, Issues: is}
}
