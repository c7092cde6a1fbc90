package source

import (
	"errors"
	"strings"
)

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

var (
	errorsAs       = errors.As
	errorsIs       = errors.Is
	contains       = strings.Contains
	stringsToUpper = strings.ToUpper
)
