package conf

import (
	"path"
	"time"

	"github.com/BurntSushi/toml"
)

// value is one leaf of the file as written. It never fails to decode, so
// that one wrong type does not hide the problems after it: a value of the
// wrong TOML type leaves Got set and is reported during validation.
type value[T any] struct {
	V   T
	Set bool   // the key is in the file (or Default gave it)
	Got string // TOML type of a value that does not fit T; "" when it fits
}

// given returns a value that counts as written in the file.
func given[T any](v T) value[T] { return value[T]{V: v, Set: true} }

// UnmarshalTOML implements toml.Unmarshaler.
func (v *value[T]) UnmarshalTOML(data any) error {
	v.Set = true
	ok := false
	switch p := any(&v.V).(type) {
	case *string:
		*p, ok = data.(string)
	case *bool:
		*p, ok = data.(bool)
	case *int64:
		*p, ok = data.(int64)
	case *float64:
		switch n := data.(type) {
		case float64:
			*p, ok = n, true
		case int64: // load_max = 6 means 6.0
			*p, ok = float64(n), true
		}
	case *[]string:
		a, isArray := data.([]any)
		if !isArray {
			break
		}
		*p = make([]string, 0, len(a))
		for _, e := range a {
			s, isString := e.(string)
			if !isString {
				v.V = *new(T)
				v.Got = "an array holding " + typeName(e)
				return nil
			}
			*p = append(*p, s)
		}
		ok = true
	}
	if !ok {
		v.V = *new(T)
		v.Got = typeName(data)
	}
	return nil
}

// typeName names the TOML type of a decoded value for messages.
func typeName(data any) string {
	switch data.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a datetime"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "an unknown type"
	}
}

// metaTypeName names a type as MetaData.Type reports it.
func metaTypeName(t string) string {
	switch t {
	case "String":
		return "a string"
	case "Integer":
		return "an integer"
	case "Float":
		return "a float"
	case "Bool":
		return "a boolean"
	case "Datetime":
		return "a datetime"
	case "Array":
		return "an array"
	case "Hash", "":
		return "a table"
	case "ArrayHash":
		return "an array of tables"
	default:
		return t
	}
}

// The raw* types mirror the file. Tables are toml.Primitive so that a table
// of the wrong shape ([mirror] instead of [[mirror]]) is one issue and the
// rest of the file is still checked.

type rawFile struct {
	Server  toml.Primitive `toml:"server"`
	Storage toml.Primitive `toml:"storage"`
	Users   toml.Primitive `toml:"users"`
	S3      toml.Primitive `toml:"s3"`
	Mirror  toml.Primitive `toml:"mirror"`
	Perms   toml.Primitive `toml:"perms"`
	HTTP    toml.Primitive `toml:"http"`
	Alerts  toml.Primitive `toml:"alerts"`
	Log     toml.Primitive `toml:"log"`
}

type rawServer struct {
	Listen              value[string] `toml:"listen"`
	PublicHost          value[string] `toml:"public_host"`
	PassivePorts        value[string] `toml:"passive_ports"`
	IdleTimeout         value[string] `toml:"idle_timeout"`
	LoginTimeout        value[string] `toml:"login_timeout"`
	ShutdownGrace       value[string] `toml:"shutdown_grace"`
	MaxConnections      value[int64]  `toml:"max_connections"`
	MaxConnectionsPerIP value[int64]  `toml:"max_connections_per_ip"`
	ActiveMode          value[bool]   `toml:"active_mode"`
	Banner              value[string] `toml:"banner"`

	TLS toml.Primitive `toml:"tls"`
	Ban toml.Primitive `toml:"ban"`
}

type rawTLS struct {
	Mode value[string] `toml:"mode"`
	Cert value[string] `toml:"cert"`
	Key  value[string] `toml:"key"`
}

type rawBan struct {
	MaxFailures value[int64]  `toml:"max_failures"`
	Window      value[string] `toml:"window"`
	Duration    value[string] `toml:"duration"`
}

type rawStorage struct {
	Root      value[string] `toml:"root"`
	Uploads   value[string] `toml:"uploads"`
	Group     value[string] `toml:"group"`
	FileMode  value[string] `toml:"file_mode"`
	DirMode   value[string] `toml:"dir_mode"`
	StateDir  value[string] `toml:"state_dir"`
	ResumeTTL value[string] `toml:"resume_ttl"`
	Fsync     value[bool]   `toml:"fsync"`
	CommitLog value[int64]  `toml:"commit_log"`
}

type rawUser struct {
	Name         value[string] `toml:"name"`
	PasswordHash value[string] `toml:"password_hash"`
	Role         value[string] `toml:"role"`
	Home         value[string] `toml:"home"`
}

type rawS3 struct {
	Endpoint      value[string] `toml:"endpoint"`
	Secure        value[bool]   `toml:"secure"`
	Region        value[string] `toml:"region"`
	AccessKey     value[string] `toml:"access_key"`
	SecretKey     value[string] `toml:"secret_key"` // rejected: secrets are never inline
	SecretKeyFile value[string] `toml:"secret_key_file"`
}

type rawMirror struct {
	Name           value[string]   `toml:"name"`
	Local          value[string]   `toml:"local"`
	Bucket         value[string]   `toml:"bucket"`
	Prefix         value[string]   `toml:"prefix"`
	Remove         value[bool]     `toml:"remove"`
	Pull           value[string]   `toml:"pull"`
	Reconcile      value[string]   `toml:"reconcile"`
	Exclude        value[[]string] `toml:"exclude"`
	MaxDelete      value[int64]    `toml:"max_delete"`
	MaxDeleteRatio value[float64]  `toml:"max_delete_ratio"`
}

type rawPerms struct {
	Path        value[string]   `toml:"path"`
	Owner       value[string]   `toml:"owner"`
	Group       value[string]   `toml:"group"`
	FileMode    value[string]   `toml:"file_mode"`
	DirMode     value[string]   `toml:"dir_mode"`
	Exclude     value[[]string] `toml:"exclude"`
	AfterMirror value[bool]     `toml:"after_mirror"`
	Rate        value[float64]  `toml:"rate"`
}

type rawHTTP struct {
	Listen value[string] `toml:"listen"`
}

type rawAlerts struct {
	WebhookURL        value[string]  `toml:"webhook_url"`
	TelegramToken     value[string]  `toml:"telegram_token"` // rejected: secrets are never inline
	TelegramTokenFile value[string]  `toml:"telegram_token_file"`
	TelegramChatID    value[string]  `toml:"telegram_chat_id"`
	LoadMax           value[float64] `toml:"load_max"`
	SwapMaxRatio      value[float64] `toml:"swap_max_ratio"`
	DiskMinFreeRatio  value[float64] `toml:"disk_min_free_ratio"`
	MirrorLagMax      value[string]  `toml:"mirror_lag_max"`
}

type rawLog struct {
	Format value[string] `toml:"format"`
	Level  value[string] `toml:"level"`
}

// rawConfig is the whole file once every table has been decoded.
type rawConfig struct {
	Server  rawServer
	TLS     rawTLS
	Ban     rawBan
	Storage rawStorage
	Users   []rawUser
	S3      *rawS3 // nil without an [s3] section
	Mirrors []rawMirror
	Perms   []rawPerms
	HTTP    rawHTTP
	Alerts  rawAlerts
	Log     rawLog
}

// def gives v its default unless the file set it.
func def[T any](v *value[T], d T) {
	if !v.Set {
		v.V = d
	}
}

// withDefaults fills in every key the file left out. It is the only place
// that knows the defaults; they are written as they would be in the file and
// go through the same validation.
func withDefaults(r *rawConfig) {
	s := &r.Server
	def(&s.Listen, "0.0.0.0:21")
	def(&s.PassivePorts, "30000-30100")
	def(&s.IdleTimeout, "15m")
	def(&s.LoginTimeout, "30s")
	def(&s.ShutdownGrace, "30s")
	def(&s.MaxConnections, 200)
	def(&s.MaxConnectionsPerIP, 10)
	def(&s.ActiveMode, false)
	def(&s.Banner, "ftpgate")

	def(&r.TLS.Mode, string(TLSOff))

	def(&r.Ban.MaxFailures, 5)
	def(&r.Ban.Window, "10m")
	def(&r.Ban.Duration, "1h")

	st := &r.Storage
	def(&st.Uploads, "uploads")
	def(&st.FileMode, "0664")
	def(&st.DirMode, "2775")
	def(&st.ResumeTTL, "24h")
	def(&st.Fsync, true)
	def(&st.CommitLog, 64)

	for i := range r.Users {
		u := &r.Users[i]
		if u.Role.V == string(RoleAdmin) {
			def(&u.Home, ".")
		} else {
			def(&u.Home, path.Join(st.Uploads.V, u.Name.V))
		}
	}

	for i := range r.Mirrors {
		m := &r.Mirrors[i]
		def(&m.Remove, false) // the spec's example says true; false cannot delete anything
		def(&m.Reconcile, "1h")
		def(&m.MaxDelete, 1000)
		def(&m.MaxDeleteRatio, 0.2)
	}

	for i := range r.Perms {
		def(&r.Perms[i].Rate, 0) // unlimited
	}

	def(&r.HTTP.Listen, "127.0.0.1:9021")

	a := &r.Alerts
	def(&a.LoadMax, 6)
	def(&a.SwapMaxRatio, 0.5)
	def(&a.DiskMinFreeRatio, 0.1)
	def(&a.MirrorLagMax, "10m")

	def(&r.Log.Format, "text")
	def(&r.Log.Level, "info")
}
