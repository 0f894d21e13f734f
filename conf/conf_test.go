package conf

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testHash is bcrypt("secret", 10).
const testHash = "$2a$10$SSUm/FbXnvkMrxmRnJIxlu59NM6aP9DZvQb9IpUNrHo0if2iQQU8."

// currentGroup returns the name and ID of the process's group: it exists on
// every machine the tests run on.
func currentGroup(t *testing.T) (string, int) {
	t.Helper()
	gid := os.Getgid()
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		t.Fatalf("look up the current group %d: %v", gid, err)
	}
	return g.Name, gid
}

func currentUser(t *testing.T) (string, int) {
	t.Helper()
	uid := os.Getuid()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		t.Fatalf("look up the current user %d: %v", uid, err)
	}
	return u.Username, uid
}

// writeConfig writes text as ftpgate.toml in a new directory and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ftpgate.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return cfg
}

// defaultConfig is what a file that gives only root and state_dir yields.
func defaultConfig(path, root, state string) *Config {
	return &Config{
		Path: path,
		Server: Server{
			Listen:              "0.0.0.0:21",
			PassivePorts:        PortRange{Start: 30000, End: 30100},
			IdleTimeout:         15 * time.Minute,
			LoginTimeout:        30 * time.Second,
			ShutdownGrace:       30 * time.Second,
			MaxConnections:      200,
			MaxConnectionsPerIP: 10,
			Banner:              "ftpgate",
			TLS:                 TLS{Mode: TLSOff},
			Ban:                 Ban{MaxFailures: 5, Window: 10 * time.Minute, Duration: time.Hour},
		},
		Storage: Storage{
			Root:      root,
			Uploads:   "uploads",
			GID:       -1,
			FileMode:  0o664,
			DirMode:   fs.ModeSetgid | 0o775,
			StateDir:  state,
			ResumeTTL: 24 * time.Hour,
			Fsync:     true,
			CommitLog: 64 << 20,
		},
		Users:   []User{},
		Mirrors: []Mirror{},
		Perms:   []Perms{},
		HTTP:    HTTP{Listen: "127.0.0.1:9021"},
		Alerts: Alerts{
			LoadMax:          6,
			SwapMaxRatio:     0.5,
			DiskMinFreeRatio: 0.1,
			MirrorLagMax:     10 * time.Minute,
		},
		Log: Log{Format: LogText, Level: slog.LevelInfo},
	}
}

func TestParseSpecExample(t *testing.T) {
	t.Setenv(EnvS3SecretKey, "")
	groupName, gid := currentGroup(t)
	userName, uid := currentUser(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s3.secret")
	if err := os.WriteFile(secretFile, []byte("minio-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The example of SPEC.md as it is, but for what only exists on a
	// storage node: the hash, the groups and users, the secret file.
	spec, err := os.ReadFile(filepath.Join("testdata", "valid", "spec.toml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(
		`"$2a$10$..."`, strconv.Quote(testHash),
		`owner = "minio-user"`, "owner = "+strconv.Quote(userName),
		`"minio-user"`, strconv.Quote(groupName),
		`"ftp"`, strconv.Quote(groupName),
		"/etc/ftpgate/s3.secret", secretFile,
	).Replace(string(spec))
	path := filepath.Join(dir, "ftpgate.toml")
	cfg, err := Parse([]byte(text), path)
	if err != nil {
		t.Fatalf("Parse(spec example): %v", err)
	}

	want := defaultConfig(path, "/mnt/spl/ftp", "/var/lib/ftpgate")
	want.Server.PublicHost = "203.0.113.10"
	want.Server.Banner = "Genesis FTP"
	want.Server.TLS = TLS{Mode: TLSExplicit, Cert: "/etc/ftpgate/tls.crt", Key: "/etc/ftpgate/tls.key"}
	want.Storage.Group, want.Storage.GID = groupName, gid
	want.Users = []User{{Name: "dj1", PasswordHash: testHash, Role: RoleUploader, Home: "uploads/dj1"}}
	want.S3 = &S3{Endpoint: "127.0.0.1:9000", AccessKey: "ftpgate", SecretKey: "minio-secret"}
	want.Mirrors = []Mirror{{
		Name:           "genesisassets",
		Local:          "/mnt/spl/ftp/uploads",
		Bucket:         "genesisassets",
		Remove:         true,
		Pull:           "0 3 * * *",
		Reconcile:      time.Hour,
		Exclude:        []string{"*.tmp", ".~lock*"},
		MaxDelete:      1000,
		MaxDeleteRatio: 0.2,
	}}
	want.Perms = []Perms{{
		Path: "/mnt/spl/ftp", UID: -1, Group: groupName, GID: gid,
		FileMode: 0o664, DirMode: fs.ModeSetgid | 0o775, HasFileMode: true, HasDirMode: true,
		AfterMirror: true,
	}, {
		Path: "/mnt/raid5/minio", Owner: userName, UID: uid, Group: groupName, GID: gid,
		FileMode: 0o640, DirMode: 0o750, HasFileMode: true, HasDirMode: true,
	}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse(spec example) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseMinimalGetsDefaults(t *testing.T) {
	path := writeConfig(t, "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\n")
	cfg := mustLoad(t, path)
	if want := defaultConfig(path, "/srv/ftp", "/var/lib/ftpgate"); !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(minimal) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseValid(t *testing.T) {
	groupName, gid := currentGroup(t)
	const storage = "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\n"
	user := func(name, role, extra string) string {
		return "[[users]]\nname = " + strconv.Quote(name) + "\nrole = " + strconv.Quote(role) +
			"\npassword_hash = " + strconv.Quote(testHash) + "\n" + extra
	}
	tests := []struct {
		name  string
		text  string
		check func(t *testing.T, cfg *Config, dir string)
	}{{
		name: "relative paths are relative to the file",
		text: "[storage]\nroot = \"data\"\nstate_dir = \"./state/../var\"\n" +
			"[server.tls]\nmode = \"required\"\ncert = \"tls/cert.pem\"\nkey = \"/etc/k.pem\"\n",
		check: func(t *testing.T, cfg *Config, dir string) {
			if cfg.Storage.Root != filepath.Join(dir, "data") || cfg.Storage.StateDir != filepath.Join(dir, "var") {
				t.Errorf("root, state_dir = %q, %q; want them under %q", cfg.Storage.Root, cfg.Storage.StateDir, dir)
			}
			if cfg.Server.TLS.Cert != filepath.Join(dir, "tls/cert.pem") || cfg.Server.TLS.Key != "/etc/k.pem" {
				t.Errorf("TLS = %+v", cfg.Server.TLS)
			}
		},
	}, {
		name: "user homes default by role",
		text: "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\nuploads = \"in/./box/\"\n" +
			user("boss", "admin", "") + user("dj1", "uploader", "") + user("guest", "reader", "") +
			user("dj2", "uploader", "home = \"shared//dj2/../dj2/\"\n"),
		check: func(t *testing.T, cfg *Config, dir string) {
			want := []User{
				{Name: "boss", PasswordHash: testHash, Role: RoleAdmin, Home: "."},
				{Name: "dj1", PasswordHash: testHash, Role: RoleUploader, Home: "in/box/dj1"},
				{Name: "guest", PasswordHash: testHash, Role: RoleReader, Home: "in/box/guest"},
				{Name: "dj2", PasswordHash: testHash, Role: RoleUploader, Home: "shared/dj2"},
			}
			if cfg.Storage.Uploads != "in/box" {
				t.Errorf("uploads = %q, want in/box", cfg.Storage.Uploads)
			}
			if !reflect.DeepEqual(cfg.Users, want) {
				t.Errorf("users = %+v, want %+v", cfg.Users, want)
			}
		},
	}, {
		name: "users as an inline array of tables",
		text: "users = [{name = \"a\", role = \"reader\", password_hash = \"" + testHash + "\"}]\n" + storage,
		check: func(t *testing.T, cfg *Config, dir string) {
			if len(cfg.Users) != 1 || cfg.Users[0].Home != "uploads/a" {
				t.Errorf("users = %+v", cfg.Users)
			}
		},
	}, {
		name: "modes",
		text: "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\nfile_mode = \"640\"\ndir_mode = \"3770\"\n" +
			"[[perms]]\npath = \"/srv/tmp\"\ndir_mode = \"1777\"\n" +
			"[[perms]]\npath = \"/srv/bin\"\nfile_mode = \"0755\"\ndir_mode = \"4755\"\n",
		check: func(t *testing.T, cfg *Config, dir string) {
			if cfg.Storage.FileMode != 0o640 || cfg.Storage.DirMode != fs.ModeSetgid|fs.ModeSticky|0o770 {
				t.Errorf("storage modes = %v, %v", cfg.Storage.FileMode, cfg.Storage.DirMode)
			}
			p := cfg.Perms
			if p[0].HasFileMode || !p[0].HasDirMode || p[0].DirMode != fs.ModeSticky|0o777 {
				t.Errorf("perms[0] = %+v", p[0])
			}
			if p[1].FileMode != 0o755 || p[1].DirMode != fs.ModeSetuid|0o755 {
				t.Errorf("perms[1] = %+v", p[1])
			}
		},
	}, {
		name: "group by name and by number",
		text: "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\ngroup = " + strconv.Quote(groupName) + "\n" +
			"[[perms]]\npath = \"/srv/x\"\nowner = \"4242\"\ngroup = \"4243\"\nexclude = [\"lost+found\"]\n",
		check: func(t *testing.T, cfg *Config, dir string) {
			if cfg.Storage.Group != groupName || cfg.Storage.GID != gid {
				t.Errorf("storage group = %q %d, want %q %d", cfg.Storage.Group, cfg.Storage.GID, groupName, gid)
			}
			if p := cfg.Perms[0]; p.UID != 4242 || p.GID != 4243 || !reflect.DeepEqual(p.Exclude, []string{"lost+found"}) {
				t.Errorf("perms[0] = %+v", p)
			}
		},
	}, {
		name: "everything else",
		text: "[server]\nlisten = \"[::]:2121\"\npassive_ports = \"40000\"\nactive_mode = true\nshutdown_grace = \"0s\"\n" +
			"login_timeout = \"5s\"\npublic_host = \"ftp.example.com\"\n" +
			"[server.ban]\nmax_failures = 3\nwindow = \"1m\"\nduration = \"90s\"\n" + storage +
			"[http]\nlisten = \":0\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n" +
			"[alerts]\nwebhook_url = \"https://hooks.example.com/x\"\nload_max = 12\nmirror_lag_max = \"1h\"\ndisk_min_free_ratio = 0\n",
		check: func(t *testing.T, cfg *Config, dir string) {
			s := cfg.Server
			if s.Listen != "[::]:2121" || s.PassivePorts != (PortRange{40000, 40000}) || !s.ActiveMode ||
				s.ShutdownGrace != 0 || s.LoginTimeout != 5*time.Second || s.PublicHost != "ftp.example.com" {
				t.Errorf("server = %+v", s)
			}
			if s.Ban != (Ban{MaxFailures: 3, Window: time.Minute, Duration: 90 * time.Second}) {
				t.Errorf("ban = %+v", s.Ban)
			}
			if cfg.HTTP.Listen != ":0" || cfg.Log != (Log{Format: LogJSON, Level: slog.LevelDebug}) {
				t.Errorf("http, log = %+v, %+v", cfg.HTTP, cfg.Log)
			}
			a := cfg.Alerts
			if a.WebhookURL != "https://hooks.example.com/x" || a.LoadMax != 12 || a.MirrorLagMax != time.Hour || a.DiskMinFreeRatio != 0 {
				t.Errorf("alerts = %+v", a)
			}
		},
	}, {
		name: "mirror prefixes end in a slash",
		text: storage + "[s3]\nendpoint = \"minio.example.com\"\nsecure = true\naccess_key = \"k\"\n" +
			"[[mirror]]\nname = \"a\"\nlocal = \"/srv/a\"\nbucket = \"bk1\"\nprefix = \"backup\"\n" +
			"[[mirror]]\nname = \"b\"\nlocal = \"/srv/b\"\nbucket = \"bk1\"\nprefix = \"backup2/\"\npull = \"@daily\"\n",
		check: func(t *testing.T, cfg *Config, dir string) {
			if cfg.Mirrors[0].Prefix != "backup/" || cfg.Mirrors[1].Prefix != "backup2/" {
				t.Errorf("prefixes = %q, %q", cfg.Mirrors[0].Prefix, cfg.Mirrors[1].Prefix)
			}
			if !cfg.S3.Secure || cfg.S3.SecretKey != "from-env" {
				t.Errorf("s3 = %+v", cfg.S3)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvS3SecretKey, "from-env")
			path := writeConfig(t, tt.text)
			tt.check(t, mustLoad(t, path), filepath.Dir(path))
		})
	}
}

func TestParseSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s3File := write("s3.secret", "  from-file\n")
	write("tg.token", "123:abc\n")
	const base = "[storage]\nroot = \"/srv/ftp\"\nstate_dir = \"/var/lib/ftpgate\"\n[s3]\nendpoint = \"127.0.0.1:9000\"\naccess_key = \"k\"\n"

	tests := []struct {
		name      string
		text      string
		s3Env     string
		tgEnv     string
		wantS3    string
		wantToken string
	}{
		{name: "file", text: base + "secret_key_file = " + strconv.Quote(s3File) + "\n", wantS3: "from-file"},
		{name: "relative file", text: base + "secret_key_file = \"s3.secret\"\n", wantS3: "from-file"},
		{name: "file wins over env", text: base + "secret_key_file = " + strconv.Quote(s3File) + "\n", s3Env: "env", wantS3: "from-file"},
		{name: "env", text: base, s3Env: " from-env\n", wantS3: "from-env"},
		{
			name:  "telegram from file",
			text:  base + "secret_key_file = \"s3.secret\"\n[alerts]\ntelegram_token_file = \"tg.token\"\ntelegram_chat_id = \"-100\"\n",
			tgEnv: "ignored", wantS3: "from-file", wantToken: "123:abc",
		},
		{
			name: "telegram from env", text: base + "[alerts]\ntelegram_token_file = \"\"\ntelegram_chat_id = \"42\"\n",
			s3Env: "e", tgEnv: "456:def", wantS3: "e", wantToken: "456:def",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvS3SecretKey, tt.s3Env)
			t.Setenv(EnvTelegramToken, tt.tgEnv)
			cfg, err := Parse([]byte(tt.text), filepath.Join(dir, "ftpgate.toml"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.S3.SecretKey != tt.wantS3 || cfg.Alerts.TelegramToken != tt.wantToken {
				t.Errorf("secrets = %q, %q; want %q, %q", cfg.S3.SecretKey, cfg.Alerts.TelegramToken, tt.wantS3, tt.wantToken)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	got := Default(testHash)
	want := defaultConfig("", filepath.Join(wd, "ftpgate-data"), filepath.Join(wd, "ftpgate-state"))
	want.Server.Listen = "127.0.0.1:2121"
	want.Server.PassivePorts = PortRange{Start: 30000, End: 30099}
	want.Users = []User{{Name: "admin", PasswordHash: testHash, Role: RoleAdmin, Home: "."}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}
	if got.S3 != nil || len(got.Mirrors) != 0 {
		t.Error("Default() mirrors; mirroring must be off without [s3]")
	}
}

// TestDefaultValid checks that the embedded default passes the checks that
// Default itself does not report.
func TestDefaultValid(t *testing.T) {
	r := defaultRaw(testHash)
	withDefaults(r)
	c := newChecker(&positions{}, os.LookupEnv)
	got := c.build(r, "/work")
	if len(c.issues) > 0 {
		t.Fatalf("the embedded default is invalid: %v", c.err("default"))
	}
	if got.Storage.Root != "/work/ftpgate-data" {
		t.Errorf("root = %q", got.Storage.Root)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want an error wrapping fs.ErrNotExist", err)
	}
	var cerr *Error
	if errors.As(err, &cerr) {
		t.Errorf("Load(missing) returned a *conf.Error: %v", err)
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name, flag, env string
		want            string
		explicit        bool
	}{
		{name: "flag", flag: "/a.toml", env: "/b.toml", want: "/a.toml", explicit: true},
		{name: "env", env: "/b.toml", want: "/b.toml", explicit: true},
		{name: "fallback", want: DefaultPath, explicit: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvConfig, tt.env)
			got, explicit := Resolve(tt.flag)
			if got != tt.want || explicit != tt.explicit {
				t.Errorf("Resolve(%q) = %q, %v; want %q, %v", tt.flag, got, explicit, tt.want, tt.explicit)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Name: "ftpgate.toml", Issues: []Issue{
		{Key: "server.passive_ports", Line: 12, Msg: `"30100-30000": start is above end`},
		{Key: "storage.root", Msg: "required"},
		{Line: 3, Msg: "strings cannot contain newlines"},
	}}
	want := `ftpgate.toml:12: server.passive_ports: "30100-30000": start is above end` + "\n" +
		"ftpgate.toml: storage.root: required\n" +
		"ftpgate.toml:3: strings cannot contain newlines"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

// TestDistExample checks that the shipped example is valid as it is, and
// that it shows every key.
func TestDistExample(t *testing.T) {
	t.Setenv(EnvS3SecretKey, "example-secret") // the example leaves it to the environment
	t.Setenv(EnvTelegramToken, "")
	path := filepath.Join("..", "dist", "ftpgate.toml")
	cfg := mustLoad(t, path)
	if cfg.S3 == nil || len(cfg.Mirrors) == 0 || len(cfg.Perms) == 0 || len(cfg.Users) == 0 {
		t.Errorf("the example leaves sections out: %+v", cfg)
	}

	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]any{
		"server": rawServer{}, "server.tls": rawTLS{}, "server.ban": rawBan{}, "storage": rawStorage{},
		"users": rawUser{}, "s3": rawS3{}, "mirror": rawMirror{}, "perms": rawPerms{},
		"http": rawHTTP{}, "alerts": rawAlerts{}, "log": rawLog{},
	}
	rejected := map[string]bool{"s3.secret_key": true, "alerts.telegram_token": true}
	for table, raw := range tables {
		header := regexp.MustCompile(`(?m)^#? ?\[\[?` + regexp.QuoteMeta(table) + `\]\]?`)
		if !header.Match(text) {
			t.Errorf("the example has no [%s]", table)
		}
		for key := range tagsOf(raw) {
			if key == "tls" || key == "ban" || rejected[table+"."+key] {
				continue
			}
			if !regexp.MustCompile(`(?m)^#? ?` + key + ` +=`).Match(text) {
				t.Errorf("the example does not show %s.%s", table, key)
			}
		}
	}
}
