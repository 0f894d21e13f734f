// Package conf owns ftpgate's configuration: it turns a TOML file into a
// validated, read-only Config, supplies the embedded default used when no
// file exists, and knows where the file is looked for.
//
// Decoding is strict. Unknown keys, wrong types and invalid values are all
// collected into one *Error whose lines name the file, the line, the key
// (users[2].home) and what is wrong. Defaults are applied in one place,
// withDefaults, and go through the same checks as the file. Secrets are
// never written inline: they come from *_file keys or from environment
// variables (EnvS3SecretKey, EnvTelegramToken).
//
// Nothing in the package keeps state; a Config is safe to share between
// goroutines as long as nobody modifies it.
package conf
