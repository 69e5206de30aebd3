"""UCI front end of tunmon: /etc/config/tunmon (or `uci export tunmon`) -> tunmon XML config.

Runs unchanged on CPython 3 and the MicroPython unix port, so it uses no re, os.path or typing.

Schema (package `tunmon`; every section may be named or anonymous unless said otherwise):

    config tunmon 'main'                  global settings; must be named 'main'
        option enabled '0'                init script only; default 0
        option interpreter 'auto'         launcher only: auto | micropython | python3
        option interval '5'               -> <interval>        time, 0.1 s to 1 day
        option pidfile '/var/run/tunmon.pid'   -> <pidfile>         absolute path
        option script_timeout '60'        -> <script_timeout>  time > 0, at most 1 day
        option max_scripts '8'            -> <max_scripts>     whole number >= 1
        option trace '0'                  -> <trace>           boolean, written as 0/1
        option hotplug '0'                -> <hotplug>         boolean, written as 0/1
        option counter_source 'auto'      -> <counter_source>  auto | proc | sysfs
        option link_down_is_silence '1'   -> <link_down_is_silence>  boolean
        option status_file '/var/run/tunmon/status.json'   -> <status_file>  absolute path
        option status_interval '10'       -> <status_interval> time > 0
    config device                         -> <net_devices><net_device>, one per name
        option name '6in4-henet'          required; `list name` watches several devices,
                                          which share the options below (XML attributes)
        option target '2001:db8::1'       address or host name (probe, TUNMON_TARGET)
        option probe 'icmp'               icmp | none; icmp needs target
        option min_rx_bytes '0'           whole number >= 0
        option depends 'wan'              a device reference (below), exactly one device
        option link_down_is_silence '1'   boolean
    config action                         -> <actions><action><time/><script/></action>
        option time '15'                  required, time
        option script '/usr/share/tunmon/ping.sh'   required, one script
        list device 'wg0'                 optional: only for these devices (device="...")
    config retry                          -> <retry_actions><retry><interval/><script/></retry>
        option interval '5m'              required, time
        option script '/usr/share/tunmon/ifup.sh'   required, one script
        list device 'wg0'                 optional, as for action
    config restore                        -> <restore_dev><script/>...
        list script '/usr/share/tunmon/log.sh'      required; option or list
        list device 'wg0'                 optional, set on each of the section's scripts
    config post_restore_any               -> <post_restore_any><script/>...
        list script '...'                 required; option or list
        list device 'wg0'                 optional, as for restore
    config stats                          -> <stats>; at most one; needs file or udp
        option interval '60'              time > 0
        option file '/tmp/tunmon.stats'   absolute path
        option max_size '64k'             bytes, suffix k or M
        option udp '192.0.2.9:8089'       host:port ([v6]:port)
        option format 'json'              json | influx

A device reference (depends, device) is the name of a named device section, standing for the
interfaces it watches, or a watched interface name; a name that would mean both, differently,
is an error. A `device` value may hold several references separated by spaces.

Times take the XML syntax (15, 2.5, 4m; suffixes s m h d). Sections keep file order. Only the
options that are set are written, so defaults live in one place, the XML loader, whose own
parsers check every value. A script's first word must be absolute or a bare command on PATH,
and status and stats files absolute paths: a relative path would resolve against the generated
XML's directory. A disabled config may name no device (the shipped default); an enabled one
must name at least one. Output is a pure function of the input text.
"""
import os
import sys

from tunmon_xml import (DEVICE_ATTRIBUTES, GLOBAL_VALUES, MAX_CONFIG_BYTES,
                        STATS_VALUES,
                        ConfigError, decode_utf8, escape, os_error_text, parse_bool, parse_count,
                        parse_seconds, shown, split_words, valid_interface_name,
                        write_atomically)

NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
BLANKS = " \t\r\f\v"
# An unquoted word ends at a blank, a newline, `;` (end of command) or `#` (comment).
WORD_ENDS = BLANKS + "\n;#"
USAGE = "usage: tunmon --uci-to-xml [FILE|-] [--output PATH]"


class Section:
    """One UCI section: type, `uci show` path, line of its `config` command, options.

    options maps an option name to its values, [(value, line), ...]: one for an `option`,
    any number for a `list`.
    """

    def __init__(self, kind, path, line):
        self.kind = kind
        self.path = path
        self.line = line
        self.options = {}


# ---- UCI syntax -------------------------------------------------------------------------

def parse_uci(text, filename):
    """Parse UCI text into a list of Sections in file order, with UCI's semantics."""
    sections = []
    by_path = {}        # indexes, so that thousands of sections stay linear
    counts = {}         # section type -> sections of that type so far
    current = None
    for line, words in _commands(text.replace("\r\n", "\n"), filename):
        keyword = words[0]
        if keyword in ("config", "c"):
            current = _open_section(sections, by_path, counts, words, line, filename)
        elif keyword in ("option", "o", "list", "l"):
            if current is None:
                raise ConfigError("'%s' before the first 'config'" % keyword, filename, line)
            _set_option(current, keyword[0] == "l", words, line, filename)
        elif keyword in ("package", "p"):
            _check_package(sections, words, line, filename)
        else:
            raise ConfigError("unknown command '%s' (expected config, option, list or package)"
                              % _shown(keyword), filename, line)
    return sections


def _commands(text, filename):
    """Yield (line, words) per command; a command ends at an unquoted newline or `;`."""
    words = []
    command_line = 1
    line = 1
    pos = 0
    end = len(text)
    while pos < end:
        char = text[pos]
        if char in BLANKS:
            pos += 1
        elif char == "\\" and text[pos + 1:pos + 2] == "\n":
            pos += 2  # a continued line, as between words in sh
            line += 1
        elif char == "#":
            pos = text.find("\n", pos)
            if pos < 0:
                pos = end
        elif char == "\n" or char == ";":
            if words:
                yield command_line, words
                words = []
            if char == "\n":
                line += 1
            pos += 1
        else:
            if not words:
                command_line = line
            word, pos, line = _word(text, pos, line, filename)
            words.append(word)
    if words:
        yield command_line, words


def _word(text, pos, line, filename):
    """Read the word at pos: quoted and unquoted pieces joined. Returns (word, pos, line)."""
    pieces = []
    end = len(text)
    while pos < end and text[pos] not in WORD_ENDS:
        char = text[pos]
        if char == "'":
            close = text.find("'", pos + 1)
            if close < 0:
                raise ConfigError("unterminated ' quote", filename, line)
            piece = text[pos + 1:close]
            pieces.append(piece)
            line += piece.count("\n")
            pos = close + 1
        elif char == '"':
            pos, line = _double_quoted(text, pos + 1, line, pieces, filename)
        elif char == "\\":
            pos, line = _escaped(text, pos + 1, line, pieces)
        else:
            pieces.append(char)
            pos += 1
    return "".join(pieces), pos, line


def _double_quoted(text, pos, line, pieces, filename):
    """Read a "..." piece whose opening quote is just before pos; backslash escapes apply."""
    start_line = line
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == '"':
            return pos + 1, line
        if char == "\\":
            pos, line = _escaped(text, pos + 1, line, pieces)
        else:
            pieces.append(char)
            if char == "\n":
                line += 1
            pos += 1
    raise ConfigError('unterminated " quote', filename, start_line)


def _escaped(text, pos, line, pieces):
    """Handle the character after a backslash: a newline vanishes with it, others are literal."""
    if pos >= len(text):
        return pos, line
    if text[pos] == "\n":
        return pos + 1, line + 1
    pieces.append(text[pos])
    return pos + 1, line


def _arguments(words, most, first, line, filename):
    """The words after the keyword, padded with '' to `most` as UCI reads a missing value;
    the first one, described by `first`, is required."""
    arguments = words[1:]
    if not arguments or not arguments[0]:
        raise ConfigError("'%s' needs a %s" % (words[0], first), filename, line)
    if len(arguments) > most:
        raise ConfigError("too many arguments to '%s' (quote a value that contains spaces)"
                          % words[0], filename, line)
    return arguments + [""] * (most - len(arguments))


def _check_name(name, what, line, filename):
    for char in name:
        if char not in NAME_CHARS:
            raise ConfigError("invalid %s name '%s': use letters, digits and _ only"
                              % (what, _shown(name)), filename, line)


def _check_package(sections, words, line, filename):
    """`uci export tunmon` starts with `package tunmon`; any other package is a mix-up."""
    name = _arguments(words, 1, "name", line, filename)[0]
    if name != "tunmon":
        raise ConfigError("package '%s' is not tunmon's config" % _shown(name), filename, line)
    if sections:
        raise ConfigError("'package' after the first section", filename, line)


def _open_section(sections, by_path, counts, words, line, filename):
    """Start a section; naming an existing section reopens it, as UCI does."""
    kind, name = _arguments(words, 2, "type", line, filename)
    _check_name(kind, "section type", line, filename)
    if name:
        _check_name(name, "section", line, filename)
        path = "tunmon." + name
        section = by_path.get(path)
        if section is not None:
            if section.kind != kind:
                raise ConfigError("section '%s' has type '%s' (line %d), not '%s'"
                                  % (name, section.kind, section.line, kind), filename, line)
            return section
    else:
        # Named sections count too, as in `uci show`'s @type[N].
        path = "tunmon.@%s[%d]" % (kind, counts.get(kind, 0))
    section = Section(kind, path, line)
    sections.append(section)
    by_path[path] = section
    counts[kind] = counts.get(kind, 0) + 1
    return section


def _set_option(section, is_list, words, line, filename):
    """Apply `option`/`list`: a list appends (after a plain option, keeping its value first),
    an option replaces, and `option x ''` deletes x."""
    name, value = _arguments(words, 2, "name", line, filename)
    _check_name(name, "option", line, filename)
    if is_list:
        section.options[name] = section.options.get(name, []) + [(value, line)]
    elif value:
        section.options[name] = [(value, line)]
    else:
        section.options.pop(name, None)


# ---- value checks: each returns the text to write or raises ValueError ------------------
# They apply the XML loader's own parsers and limits, so a translated config always loads.

def _time(value):
    parse_seconds(value)
    return value.strip()


def _bool(value):
    return "1" if parse_bool(value) else "0"


def _enabled(value):
    # The init script reads it with config_get_bool, which knows these words, in this case,
    # and takes any other for off: the service would stay stopped without a word.
    if value in ("1", "on", "true", "yes", "enabled"):
        return "1"
    if value in ("0", "off", "false", "no", "disabled"):
        return "0"
    raise ValueError("'%s' is not a boolean (the init script knows 1, on, true, yes, enabled"
                     " and 0, off, false, no, disabled)" % _shown(value))


def _count(value):
    return str(parse_count(value, 1))


def _interpreter(value):
    if value not in ("auto", "micropython", "python3"):
        raise ValueError("'%s' is not an interpreter (auto, micropython or python3)"
                         % _shown(value))
    return value


def _device(value):
    if not valid_interface_name(value):
        raise ValueError("'%s' is not a network interface name" % _shown(value))
    return value


def _script(value):
    words = split_words(value)
    if not words:
        raise ValueError("empty script")
    if "/" in words[0] and not words[0].startswith("/"):
        # The XML loader would resolve it against the generated file's directory.
        raise ValueError("relative script path '%s': use an absolute path or a command on PATH"
                         % words[0])
    return value


def _xml(table, key):
    """The check of the XML loader itself for `key` of `table` (GLOBAL_VALUES, ...)."""
    parse = table[key][1]

    def check(value):
        parse(value.strip())
        return value.strip()
    return check


def _path(value):
    if not value.startswith("/"):
        raise ValueError("'%s' is not an absolute path" % _shown(value))
    return value


def _one_word(value):
    if len(value.split()) != 1:
        raise ValueError("'%s' is not one word" % _shown(value))
    return value.strip()


def _words(value):
    if not value.split():
        raise ValueError("empty value")
    return value


# Per section type, in README order: (option, check, may be a list, required).
DEVICE_LIMIT = ("device", _words, True, False)
SCHEMA = (
    ("tunmon", (("enabled", _enabled, False, False),
                ("interpreter", _interpreter, False, False),
                ("interval", _xml(GLOBAL_VALUES, "interval"), False, False),
                ("pidfile", _path, False, False),
                ("script_timeout", _xml(GLOBAL_VALUES, "script_timeout"), False, False),
                ("max_scripts", _count, False, False),
                ("trace", _bool, False, False),
                ("hotplug", _bool, False, False),
                ("counter_source", _xml(GLOBAL_VALUES, "counter_source"), False, False),
                ("link_down_is_silence", _bool, False, False),
                ("status_file", _path, False, False),
                ("status_interval", _xml(GLOBAL_VALUES, "status_interval"), False, False))),
    ("device", (("name", _device, True, True),
                ("target", _one_word, False, False),
                ("probe", _xml(DEVICE_ATTRIBUTES, "probe"), False, False),
                ("min_rx_bytes", _xml(DEVICE_ATTRIBUTES, "min_rx_bytes"), False, False),
                ("depends", _one_word, False, False),
                ("link_down_is_silence", _bool, False, False))),
    ("action", (("time", _time, False, True), ("script", _script, False, True), DEVICE_LIMIT)),
    ("retry", (("interval", _time, False, True), ("script", _script, False, True),
               DEVICE_LIMIT)),
    ("restore", (("script", _script, True, True), DEVICE_LIMIT)),
    ("post_restore_any", (("script", _script, True, True), DEVICE_LIMIT)),
    ("stats", (("interval", _xml(STATS_VALUES, "interval"), False, False),
               ("file", _path, False, False),
               ("max_size", _xml(STATS_VALUES, "max_size"), False, False),
               ("udp", _xml(STATS_VALUES, "udp"), False, False),
               ("format", _xml(STATS_VALUES, "format"), False, False))),
)
# Global options that become XML elements of the same name, in XML order.
GLOBAL_ELEMENTS = ("interval", "pidfile", "script_timeout", "max_scripts", "trace", "hotplug",
                   "counter_source", "link_down_is_silence", "status_file", "status_interval")
# Device options that become attributes of <net_device>, and stats options (children of
# <stats>), in XML order.
DEVICE_OPTIONS = ("target", "probe", "min_rx_bytes", "depends", "link_down_is_silence")
STATS_ELEMENTS = ("interval", "file", "max_size", "udp", "format")
# (XML forbids "--" inside a comment.)
GENERATED_NOTE = "<!-- Generated by tunmon from /etc/config/tunmon: edit that file instead. -->"


def _section_values(section, filename):
    """Check a section against SCHEMA; return {option: [(text to write, line), ...]}."""
    options = None
    for kind, kind_options in SCHEMA:
        if kind == section.kind:
            options = kind_options
    if options is None:
        raise ConfigError("%s: unknown section type '%s' (known: %s)"
                          % (section.path, section.kind,
                             ", ".join([kind for kind, kind_options in SCHEMA])),
                          filename, section.line)
    if section.kind == "tunmon" and section.path != "tunmon.main":
        raise ConfigError("%s: the tunmon section must be named 'main' (config tunmon 'main')"
                          % section.path, filename, section.line)
    known = [option[0] for option in options]
    # The first unknown option in file order, whatever order the dict iterates in.
    unknown = [(items[0][1], name) for name, items in section.options.items()
               if name not in known]
    if unknown:
        line, name = min(unknown)
        raise ConfigError("%s.%s: unknown option (a %s section takes: %s)"
                          % (section.path, name, section.kind, ", ".join(known)), filename, line)
    values = {}
    for name, check, may_be_list, required in options:
        items = section.options.get(name)
        if items is None:
            if required:
                raise ConfigError("%s: missing option '%s'" % (section.path, name),
                                  filename, section.line)
            continue
        if len(items) > 1 and not may_be_list:
            raise ConfigError("%s.%s takes one value, not a list" % (section.path, name),
                              filename, items[1][1])
        path = section.path + "." + name
        values[name] = [(_checked(check, value, path, line, filename), line)
                        for value, line in items]
    return values


def _checked(check, value, path, line, filename):
    try:
        if not value:
            raise ValueError("empty value")
        for char in value:
            if char < " " and char not in "\t\n":
                raise ValueError("control character in value")
        return check(value)
    except ValueError as err:
        raise ConfigError("%s: %s" % (path, err), filename, line)


# ---- translation --------------------------------------------------------------------------

def uci_to_xml(text, filename):
    """Translate UCI text into tunmon's XML config; errors are ConfigErrors at UCI file:line."""
    sections = [(section, _section_values(section, filename))
                for section in parse_uci(text, filename)]
    settings = {}
    devices = []    # (interface name, line, its section's values, its section's path)
    device_lines = {}   # interface name -> the line that watches it
    groups = {}     # name of a named device section -> the interface names it watches
    stats = []
    for section, values in sections:
        if section.kind == "tunmon":
            settings = values
        elif section.kind == "device":
            _check_probe(values, section.path, filename)
            for name, line in values["name"]:
                _add_device(devices, device_lines, (name, line, values, section.path), filename)
            if not section.path.startswith("tunmon.@"):
                groups[section.path[len("tunmon."):]] = [name for name, line in values["name"]]
        elif section.kind == "stats":
            stats.append((section, values))
    if not devices and "enabled" in settings and _value(settings, "enabled") == "1":
        raise ConfigError("tunmon.main.enabled is on but no device is configured"
                          " (add a 'config device' section with option name)",
                          filename, settings["enabled"][0][1])
    watched = [device[0] for device in devices]
    lines = [GENERATED_NOTE, "<tun_mon>"]
    if devices:
        lines.append("  <net_devices>")
        underlays = _underlays(devices, groups, watched, filename)
        for name, line, values, path in devices:
            attributes = [(option, underlays[name][0] if option == "depends"
                           else _value(values, option))
                          for option in DEVICE_OPTIONS if option in values]
            lines.append("    <net_device%s>%s</net_device>"
                         % (_attributes(attributes), escape(name)))
        lines.append("  </net_devices>")
    lines.extend(["  " + _element(name, _value(settings, name))
                  for name in GLOBAL_ELEMENTS if name in settings])
    if stats:
        lines.extend(_stats(stats, filename))
    for kind, container, tag, time_tag in (("action", "actions", "action", "time"),
                                           ("retry", "retry_actions", "retry", "interval")):
        entries = []
        for section, values in sections:
            if section.kind == kind:
                limit = _limit(values, section.path, groups, watched, filename)
                entries.append("    <%s%s>%s%s</%s>"
                               % (tag, limit, _element(time_tag, _value(values, time_tag)),
                                  _element("script", _value(values, "script")), tag))
        _append_container(lines, container, entries)
    for kind, container in (("restore", "restore_dev"), ("post_restore_any", "post_restore_any")):
        entries = []
        for section, values in sections:
            if section.kind == kind:
                limit = _limit(values, section.path, groups, watched, filename)
                entries.extend(["    <script%s>%s</script>" % (limit, escape(script))
                                for script, line in values["script"]])
        _append_container(lines, container, entries)
    lines.append("</tun_mon>")
    return "\n".join(lines) + "\n"


def _value(values, name):
    """The text of a single-valued option in a _section_values result."""
    return values[name][0][0]


def _add_device(devices, device_lines, device, filename):
    if device[0] in device_lines:
        raise ConfigError("device '%s' is already watched (line %d)"
                          % (device[0], device_lines[device[0]]), filename, device[1])
    device_lines[device[0]] = device[1]
    devices.append(device)


def _check_probe(values, path, filename):
    if "probe" in values and _value(values, "probe") != "none" and "target" not in values:
        raise ConfigError("%s.probe: %s needs option target (the address to probe)"
                          % (path, _value(values, "probe")), filename, values["probe"][0][1])


def _resolve(reference, groups, watched, where, line, filename):
    """The interface names a device reference stands for: a named device section's names,
    or a watched interface."""
    names = groups.get(reference)
    if names is None:
        if reference in watched:
            return [reference]
        raise ConfigError("%s: '%s' is neither a device section nor a watched device"
                          % (where, reference), filename, line)
    if reference in watched and names != [reference]:
        raise ConfigError("%s: '%s' is ambiguous: the device section tunmon.%s watches %s,"
                          " and %s is a watched device too (rename the section)"
                          % (where, reference, reference, ", ".join(names), reference),
                          filename, line)
    return names


def _underlays(devices, groups, watched, filename):
    """{device: (its underlay, line and path of its depends option)}; refuses cycles."""
    underlays = {}
    for name, line, values, path in devices:
        if "depends" in values:
            reference, depends_line = values["depends"][0]
            where = path + ".depends"
            names = _resolve(reference, groups, watched, where, depends_line, filename)
            if len(names) != 1:
                raise ConfigError("%s: the device section tunmon.%s watches several devices"
                                  " (%s): depend on one of them"
                                  % (where, reference, ", ".join(names)),
                                  filename, depends_line)
            underlays[name] = (names[0], depends_line, where)
    for name in watched:
        chain = [name]
        while chain[-1] in underlays:
            underlay = underlays[chain[-1]][0]
            if underlay in chain:
                first = underlays[name]
                raise ConfigError("%s: dependency cycle: %s"
                                  % (first[2], " -> ".join(chain + [underlay])),
                                  filename, first[1])
            chain.append(underlay)
    return underlays


def _limit(values, path, groups, watched, filename):
    """The ` device="a b"` attribute for a section's `device` option, or ''."""
    names = []
    for text, line in values.get("device", ()):
        for reference in text.split():
            for name in _resolve(reference, groups, watched, path + ".device", line, filename):
                if name not in names:
                    names.append(name)
    return _attributes([("device", " ".join(names))]) if names else ""


def _stats(sections, filename):
    """The <stats> lines of the one stats section; sections: [(section, values), ...]."""
    section, values = sections[0]
    if len(sections) > 1:
        raise ConfigError("%s: only one stats section is allowed (the first is at line %d)"
                          % (sections[1][0].path, section.line), filename, sections[1][0].line)
    if "file" not in values and "udp" not in values:
        raise ConfigError("%s: needs option file or udp (or both)" % section.path,
                          filename, section.line)
    return (["  <stats>"] + ["    " + _element(name, _value(values, name))
                             for name in STATS_ELEMENTS if name in values] + ["  </stats>"])


def _attributes(pairs):
    return "".join([' %s="%s"' % (name, escape(text)) for name, text in pairs])


def _element(tag, text):
    return "<%s>%s</%s>" % (tag, escape(text), tag)


def _append_container(lines, container, entries):
    if entries:
        lines.append("  <%s>" % container)
        lines.extend(entries)
        lines.append("  </%s>" % container)


# ---- command line -------------------------------------------------------------------------

def main(argv):
    """`tunmon.py --uci-to-xml [FILE|-] [--output PATH]`; argv holds the words after
    --uci-to-xml. Returns 0 when the XML was written, 2 on any error (one line on stderr)."""
    try:
        source, output = _main_arguments(argv)
        xml = uci_to_xml(_read_text(source), "<stdin>" if source == "-" else source)
        if output:
            _write_atomically(output, xml)
        else:
            sys.stdout.buffer.write(xml.encode("utf-8"))
    except ConfigError as err:
        sys.stderr.write("error: %s\n" % err)
        return 2
    return 0


def _main_arguments(argv):
    """(source, output path or None); source '-' means stdin."""
    source = None
    output = None
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--output" and index + 1 < len(argv):
            output = argv[index + 1]
            index += 1
        elif source is None and (argument == "-" or not argument.startswith("-")):
            source = argument
        else:
            raise ConfigError(USAGE)
        index += 1
    return source or "-", output


def _read_text(source):
    # A file's size first, and a pipe's in pieces up to just past the limit: a whole read of
    # many MiB runs a small MicroPython heap out of memory before its size can be refused.
    pieces = []
    size = 0
    try:
        if source != "-" and os.stat(source)[6] > MAX_CONFIG_BYTES:
            raise ConfigError("file is larger than 1 MiB", source)
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")
        try:
            while size <= MAX_CONFIG_BYTES:
                piece = stream.read(16384)
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
        finally:
            if source != "-":
                stream.close()
    except OSError as err:
        raise ConfigError("cannot read %s: %s" % (source, os_error_text(err)))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError("file is larger than 1 MiB", source)
    data = b"".join(pieces)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]     # a byte order mark, as some Windows editors write
    try:
        return decode_utf8(data)
    except UnicodeError:
        raise ConfigError("not UTF-8 text", source)


def _write_atomically(path, text):
    """The last good file stays in place unless the new one is complete (temp + rename, the
    same as the daemon's own files), so procd and a SIGHUP reload never see a partial one."""
    try:
        content = text.encode()
        write_atomically(path, lambda f: f.write(content))
    except OSError as err:
        raise ConfigError("cannot write %s: %s" % (path, os_error_text(err)))


def _shown(value):
    """A value as shown inside a one-line message."""
    return shown(value.replace("\n", "\\n"))
