package vaultd

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
)

// Decoding a result (a decoded MessagePack value) into the typed structs of
// types.go, by their `vaultd:"name[,optional]"` tags. Errors name the key
// (result.card.exp_month), never its value.

type fieldInfo struct {
	name     string
	index    []int
	optional bool // absent reads as the zero value
	embedded bool // fields flattened into the parent (TokenizeResult)
}

type structInfo struct {
	fields []fieldInfo
	extra  []int // index of the Extra Map, nil if none
}

var structCache sync.Map // reflect.Type -> *structInfo

var (
	panType    = reflect.TypeOf(Pan{})
	secretType = reflect.TypeOf(Secret{})
	mapType    = reflect.TypeOf(Map(nil))
)

func infoOf(t reflect.Type) *structInfo {
	if si, ok := structCache.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			si.fields = append(si.fields, fieldInfo{index: []int{i}, embedded: true})
			continue
		}
		tag, ok := f.Tag.Lookup("vaultd")
		if !ok {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "extra" {
			si.extra = []int{i}
			continue
		}
		si.fields = append(si.fields, fieldInfo{name: name, index: []int{i}, optional: opts == "optional"})
	}
	structCache.Store(t, si)
	return si
}

// knownKeys are the wire keys a struct (and its embedded structs) reads.
func knownKeys(t reflect.Type, into map[string]bool) {
	for _, f := range infoOf(t).fields {
		if f.embedded {
			knownKeys(t.Field(f.index[0]).Type, into)
		} else {
			into[f.name] = true
		}
	}
}

func protoErr(format string, a ...any) error {
	return clientErr(ErrProtocol, fmt.Sprintf(format, a...), nil)
}

// decodeInto fills dst (a pointer to a struct) from a decoded map.
func decodeInto(dst any, v any, where string) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decodeInto needs a non-nil pointer")
	}
	return decodeValue(rv.Elem(), v, where)
}

func decodeStruct(dst reflect.Value, m Map, where string, known map[string]bool) error {
	t := dst.Type()
	si := infoOf(t)
	for _, f := range si.fields {
		fv := dst.FieldByIndex(f.index)
		if f.embedded {
			if err := decodeStruct(fv, m, where, known); err != nil {
				return err
			}
			continue
		}
		raw, present := m.Get(f.name)
		at := where + "." + f.name
		if !present {
			if f.optional || fv.Kind() == reflect.Pointer {
				fv.Set(reflect.Zero(fv.Type()))
				continue
			}
			return protoErr("missing `%s`", at)
		}
		if err := decodeValue(fv, raw, at); err != nil {
			return err
		}
	}
	if si.extra != nil {
		var extra Map
		for _, e := range m {
			if !known[e.Key] {
				extra = append(extra, e)
			}
		}
		dst.FieldByIndex(si.extra).Set(reflect.ValueOf(extra))
	}
	return nil
}

func decodeValue(dst reflect.Value, v any, where string) error {
	t := dst.Type()
	switch {
	case t == panType:
		s, ok := v.(string)
		if !ok {
			return protoErr("`%s` is not a string", where)
		}
		dst.Set(reflect.ValueOf(Pan{d: s}))
		return nil
	case t == secretType:
		s, ok := v.(string)
		if !ok {
			return protoErr("`%s` is not a string", where)
		}
		dst.Set(reflect.ValueOf(Secret{s: s}))
		return nil
	case t == mapType:
		m, ok := v.(Map)
		if !ok {
			return protoErr("`%s` is not a map", where)
		}
		dst.Set(reflect.ValueOf(m))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v == nil {
			dst.Set(reflect.Zero(t))
			return nil
		}
		p := reflect.New(t.Elem())
		if err := decodeValue(p.Elem(), v, where); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	case reflect.Interface:
		if v == nil {
			dst.Set(reflect.Zero(t))
		} else {
			dst.Set(reflect.ValueOf(v))
		}
		return nil
	case reflect.Struct:
		m, ok := v.(Map)
		if !ok {
			return protoErr("`%s` is not a map", where)
		}
		known := map[string]bool{}
		knownKeys(t, known)
		return decodeStruct(dst, m, where, known)
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			return protoErr("`%s` is not an array", where)
		}
		out := reflect.MakeSlice(t, len(a), len(a))
		for i, x := range a {
			if err := decodeValue(out.Index(i), x, where+"[]"); err != nil {
				return err
			}
		}
		dst.Set(out)
		return nil
	case reflect.Map:
		m, ok := v.(Map)
		if !ok || t.Key().Kind() != reflect.String {
			return protoErr("`%s` is not a map", where)
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, e := range m {
			ev := reflect.New(t.Elem()).Elem()
			if err := decodeValue(ev, e.Value, where+"."+e.Key); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(e.Key).Convert(t.Key()), ev)
		}
		dst.Set(out)
		return nil
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return protoErr("`%s` is not a string", where)
		}
		dst.SetString(s)
		return nil
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return protoErr("`%s` is not a bool", where)
		}
		dst.SetBool(b)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, ok := v.(uint64)
		if !ok || dst.OverflowUint(u) {
			return protoErr("`%s` is not a %s", where, t.Kind())
		}
		dst.SetUint(u)
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		switch x := v.(type) {
		case uint64:
			if x > math.MaxInt64 {
				return protoErr("`%s` is not a %s", where, t.Kind())
			}
			i = int64(x)
		case int64:
			i = x
		default:
			return protoErr("`%s` is not a %s", where, t.Kind())
		}
		if dst.OverflowInt(i) {
			return protoErr("`%s` is not a %s", where, t.Kind())
		}
		dst.SetInt(i)
		return nil
	}
	return fmt.Errorf("vaultd: cannot decode into a %s", t)
}

func decodeCredentials(v any) (Credentials, error) {
	m, ok := v.(Map)
	if !ok {
		return nil, protoErr("`result` is not a map")
	}
	kind, _ := m.Get("kind")
	switch kind {
	case "network_token":
		var c NetworkTokenCredentials
		if err := decodeValue(reflect.ValueOf(&c).Elem(), m, "result"); err != nil {
			return nil, err
		}
		return &c, nil
	case "pan":
		var c PanCredentials
		if err := decodeValue(reflect.ValueOf(&c).Elem(), m, "result"); err != nil {
			return nil, err
		}
		return &c, nil
	}
	return nil, protoErr("credentials result has no known `kind`")
}

func typed[T any](v any) (any, error) {
	var out T
	if err := decodeInto(&out, v, "result"); err != nil {
		return nil, err
	}
	return &out, nil
}

// resultDecoders: op name -> decoder of its result into a pointer to its
// struct (a Credentials for credentials).
var resultDecoders = map[string]func(any) (any, error){
	OpHealth:            typed[Health],
	OpTokenize:          typed[TokenizeResult],
	OpTransactionTokens: typed[AliasRecord],
	OpAliasStatus:       typed[AliasRecord],
	OpProvision:         typed[AliasRecord],
	OpRemovePan:         typed[AliasRecord],
	OpDeleteAlias:       typed[DeleteResult],
	OpCredentials:       func(v any) (any, error) { return decodeCredentials(v) },
	OpStats:             typed[Stats],
	OpQueueList:         typed[QueueList],
	OpQueueRetry:        typed[QueueRetryResult],
	OpSchemePause:       typed[SchemePaused],
	OpSchemeResume:      typed[SchemePaused],
	OpRetention:         typed[Retention],
	OpPurgeDue:          typed[PurgeResult],
	OpEvents:            typed[Events],
	OpAudit:             typed[Audit],
	OpKeyRotate:         typed[KeyRotateResult],
	OpKeyRetire:         typed[KeyRetireResult],
	OpBackup:            typed[BackupResult],
	OpKekRefresh:        typed[KekRefreshResult],
}

// DecodeResult returns the typed result of op (a pointer to its struct, or
// a Credentials); for an op this client does not know, the raw value.
func DecodeResult(op string, result any) (any, error) {
	dec, ok := resultDecoders[op]
	if !ok {
		return result, nil
	}
	return dec(result)
}
