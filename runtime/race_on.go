//go:build race

package runtime

// raceEnabled: the race detector maps shadow memory that RLIMIT_DATA counts, so a compiling child of a
// race build watches its heap instead (see CompileMain).
const raceEnabled = true
