package conf

import (
	"io/fs"
	"log/slog"
	"time"
)

// Config is the validated configuration of one ftpgate process. Load returns a
// fresh value; callers treat it as read-only and share it freely.
type Config struct {
	// Path is the file the configuration came from, "" for the embedded default.
	Path    string
	Server  Server
	Storage Storage
	Users   []User
	S3      *S3 // nil when there is no [s3] section: mirroring is off
	Mirrors []Mirror
	Perms   []Perms
	HTTP    HTTP
	Alerts  Alerts
	Log     Log
}

// TLSMode says when the FTP server speaks TLS.
type TLSMode string

// The TLS modes of [server.tls].
const (
	TLSOff      TLSMode = "off"      // plain FTP only
	TLSExplicit TLSMode = "explicit" // AUTH TLS offered, not required
	TLSRequired TLSMode = "required" // no login before AUTH TLS
	TLSImplicit TLSMode = "implicit" // TLS from the first byte
)

// Role is what a user may do.
type Role string

// The roles of [[users]].
const (
	RoleAdmin    Role = "admin"    // whole root, read-write
	RoleUploader Role = "uploader" // own home, read-write
	RoleReader   Role = "reader"   // own home, read-only
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct {
	Start, End int
}

// Server is the [server] section.
type Server struct {
	Listen              string
	PublicHost          string
	PassivePorts        PortRange
	IdleTimeout         time.Duration
	LoginTimeout        time.Duration // unauthenticated sessions are closed after this
	ShutdownGrace       time.Duration // how long SIGTERM waits for running transfers
	MaxConnections      int
	MaxConnectionsPerIP int
	ActiveMode          bool
	Banner              string
	TLS                 TLS
	Ban                 Ban
}

// TLS is the [server.tls] section.
type TLS struct {
	Mode TLSMode
	Cert string
	Key  string
}

// Ban is the [server.ban] section: brute-force defence.
type Ban struct {
	MaxFailures int
	Window      time.Duration
	Duration    time.Duration
}

// Storage is the [storage] section.
type Storage struct {
	Root      string // absolute, cleaned
	Uploads   string // relative to Root, slash-separated, cleaned
	Group     string // name or number as written; "" = leave the process's group
	GID       int    // resolved Group; -1 when Group is ""
	FileMode  fs.FileMode
	DirMode   fs.FileMode // may carry fs.ModeSetgid
	StateDir  string      // absolute, cleaned
	ResumeTTL time.Duration
	Fsync     bool
	// CommitLog is the size in bytes of the commit log through which
	// small uploads are made durable (storage.commit_log, in MiB); 0 for
	// none.
	CommitLog int64
}

// User is one [[users]] entry.
type User struct {
	Name         string
	PasswordHash string // bcrypt
	Role         Role
	// Home is relative to Storage.Root, slash-separated and cleaned; "." for
	// the whole root (admins). It never leaves the root.
	Home string
}

// S3 is the [s3] section.
type S3 struct {
	Endpoint  string
	Secure    bool
	Region    string
	AccessKey string
	SecretKey string // resolved from secret_key_file or $FTPGATE_S3_SECRET_KEY
}

// Mirror is one [[mirror]] mapping.
type Mirror struct {
	Name           string
	Local          string // absolute, cleaned
	Bucket         string
	Prefix         string // "" or ending in "/": "backup" is read as "backup/"
	Remove         bool
	Pull           string // cron expression; "" = never
	Reconcile      time.Duration
	Exclude        []string // path.Match patterns
	MaxDelete      int
	MaxDeleteRatio float64
}

// Perms is one [[perms]] policy.
type Perms struct {
	Path        string // absolute, cleaned
	Owner       string
	UID         int // -1 when Owner is ""
	Group       string
	GID         int // -1 when Group is ""
	FileMode    fs.FileMode
	DirMode     fs.FileMode
	HasFileMode bool
	HasDirMode  bool
	Exclude     []string
	AfterMirror bool
	// Rate caps the normaliser's directory reads and changes per second;
	// 0 = unlimited.
	Rate float64
}

// HTTP is the [http] section.
type HTTP struct {
	Listen string
}

// Alerts is the [alerts] section.
type Alerts struct {
	WebhookURL       string
	TelegramToken    string // resolved from telegram_token_file
	TelegramChatID   string
	LoadMax          float64
	SwapMaxRatio     float64
	DiskMinFreeRatio float64
	MirrorLagMax     time.Duration
}

// LogFormat is how log lines are written to stderr.
type LogFormat string

// The formats of [log] format.
const (
	LogText LogFormat = "text" // slog.TextHandler
	LogJSON LogFormat = "json" // slog.JSONHandler
)

// Log is the [log] section.
type Log struct {
	Format LogFormat
	Level  slog.Level
}
