"""tunmon's configuration: a small XML parser and the config it describes.

Why a parser of our own: OpenWrt's python3-light has no `xml` package and MicroPython has none
at all, and a monitor running as root should never expand entities anyway.  The subset read
here is what hand-written configs use: elements, attributes, text, comments, the `<?xml?>`
declaration, CDATA, the five predefined entities and numeric character references.  DOCTYPE
and entity declarations are refused.  Every error names file:line:column.

The same code runs on CPython 3.11+ and the MicroPython unix port, so it avoids `re`,
`os.path` and anything else MicroPython lacks.
"""
import os

MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 32
MIN_INTERVAL = 0.1

EVENT_ACTION = "action"
EVENT_RETRY = "retry"
EVENT_RESTORE = "restore"
EVENT_POST_RESTORE = "post_restore_any"


class ConfigError(Exception):
    """A config problem; str() is the one line a user sees: file:line:col: message."""

    def __init__(self, message, filename=None, line=None, col=None):
        Exception.__init__(self, message)
        self.message = message
        self.filename = filename
        self.line = line
        self.col = col

    def __str__(self):
        where = ""
        if self.filename:
            where = self.filename + ":"
        if self.line is not None:
            where += "%d:" % self.line
            if self.col is not None:
                where += "%d:" % self.col
        return (where + " " + self.message) if where else self.message


# ---------------------------------------------------------------------------------------------
# XML subset

class Element:
    """One parsed element: tag, attributes, text (concatenated), children, and where it began."""

    def __init__(self, tag, attrs, line, col):
        self.tag = tag
        self.attrs = attrs
        self.text = ""
        self.children = []
        self.line = line
        self.col = col


ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
NAME_PUNCTUATION = "_-.:"


def _is_name_char(ch):
    return ch.isalpha() or ch.isdigit() or ch in NAME_PUNCTUATION or ord(ch) > 127


def escape(text):
    """Escape text for an XML element body or a double-quoted attribute."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


class _Parser:
    def __init__(self, text, filename):
        self.text = text
        self.filename = filename
        self.pos = 0
        # Line starts are counted lazily: only errors and elements need a position.
        self.line = 1
        self.line_start = 0
        self.counted_to = 0

    def where(self, pos):
        text = self.text
        i = self.counted_to
        while True:
            nl = text.find("\n", i, pos)
            if nl < 0:
                break
            self.line += 1
            self.line_start = nl + 1
            i = nl + 1
        self.counted_to = max(pos, self.counted_to)
        return self.line, pos - self.line_start + 1

    def error(self, message, pos=None):
        line, col = self.where(self.pos if pos is None else pos)
        return ConfigError(message, self.filename, line, col)

    def startswith(self, prefix):
        return self.text.startswith(prefix, self.pos)

    def skip_space(self):
        text = self.text
        n = len(text)
        while self.pos < n and text[self.pos] in " \t\r\n":
            self.pos += 1

    def expect_until(self, end, what):
        i = self.text.find(end, self.pos)
        if i < 0:
            raise self.error("unterminated " + what)
        chunk = self.text[self.pos:i]
        self.pos = i + len(end)
        return chunk

    def name(self):
        start = self.pos
        text = self.text
        n = len(text)
        if start >= n or not (text[start].isalpha() or text[start] == "_"):
            raise self.error("expected a name")
        while self.pos < n and _is_name_char(text[self.pos]):
            self.pos += 1
        return text[start:self.pos]

    def decode_entities(self, raw, start):
        """Replace entity and character references in `raw`, which began at offset `start`."""
        if "&" not in raw:
            return raw
        out = []
        i = 0
        while True:
            amp = raw.find("&", i)
            if amp < 0:
                out.append(raw[i:])
                return "".join(out)
            out.append(raw[i:amp])
            semi = raw.find(";", amp)
            if semi < 0 or semi - amp > 12:
                raise self.error("bare '&' (write &amp;)", start + amp)
            ref = raw[amp + 1:semi]
            if ref.startswith("#"):
                try:
                    code = int(ref[2:], 16) if ref[1:2] in ("x", "X") else int(ref[1:])
                    out.append(chr(code))
                except (ValueError, OverflowError):
                    raise self.error("bad character reference &%s;" % ref, start + amp)
            elif ref in ENTITIES:
                out.append(ENTITIES[ref])
            else:
                raise self.error("unknown entity &%s; (only lt gt amp quot apos)" % ref,
                                 start + amp)
            i = semi + 1

    def attributes(self):
        attrs = {}
        text = self.text
        while True:
            before = self.pos
            self.skip_space()
            if self.startswith("/>") or self.startswith(">"):
                return attrs
            if self.pos == before:
                raise self.error("expected whitespace before an attribute")
            name_pos = self.pos
            name = self.name()
            self.skip_space()
            if not self.startswith("="):
                raise self.error("attribute %s needs =\"value\"" % name)
            self.pos += 1
            self.skip_space()
            quote = text[self.pos:self.pos + 1]
            if quote not in ("'", '"'):
                raise self.error("attribute value must be quoted")
            self.pos += 1
            value_start = self.pos
            raw = self.expect_until(quote, "attribute value")
            if "<" in raw:
                raise self.error("'<' in attribute value", value_start)
            if name in attrs:
                raise self.error("duplicate attribute " + name, name_pos)
            attrs[name] = self.decode_entities(raw, value_start)

    def misc(self, allow_declaration):
        """Skip comments, processing instructions and whitespace between elements."""
        while True:
            self.skip_space()
            if self.startswith("<!--"):
                self.pos += 4
                body = self.expect_until("-->", "comment")
                if "--" in body:
                    raise self.error("'--' inside a comment")
            elif self.startswith("<?"):
                if not allow_declaration and self.startswith("<?xml"):
                    raise self.error("<?xml?> is only allowed at the very start")
                self.pos += 2
                self.expect_until("?>", "processing instruction")
            elif self.startswith("<!DOCTYPE") or self.startswith("<!ENTITY"):
                raise self.error("DOCTYPE and entity declarations are not allowed")
            else:
                return
            allow_declaration = False

    def document(self):
        self.misc(True)
        if not self.startswith("<"):
            raise self.error("expected the root element")
        root = self.element(1)
        self.misc(False)
        if self.pos < len(self.text):
            raise self.error("content after the root element")
        return root

    def element(self, depth):
        if depth > MAX_DEPTH:
            raise self.error("elements nested deeper than %d" % MAX_DEPTH)
        start = self.pos
        self.pos += 1
        line, col = self.where(start)
        tag = self.name()
        elem = Element(tag, self.attributes(), line, col)
        if self.startswith("/>"):
            self.pos += 2
            return elem
        self.pos += 1
        text_parts = []
        text = self.text
        while True:
            lt = text.find("<", self.pos)
            if lt < 0:
                raise self.error("<%s> is never closed" % tag, start)
            if lt > self.pos:
                text_parts.append(self.decode_entities(text[self.pos:lt], self.pos))
            self.pos = lt
            if self.startswith("</"):
                self.pos += 2
                close_pos = self.pos
                close = self.name()
                self.skip_space()
                if close != tag:
                    raise self.error("</%s> closes <%s> opened at line %d" % (close, tag, line),
                                     close_pos)
                if not self.startswith(">"):
                    raise self.error("expected '>'")
                self.pos += 1
                elem.text = "".join(text_parts)
                return elem
            if self.startswith("<![CDATA["):
                self.pos += 9
                text_parts.append(self.expect_until("]]>", "CDATA section"))
            elif self.startswith("<!--") or self.startswith("<?") or self.startswith("<!"):
                self.misc(False)
                if self.startswith("<!") and not self.startswith("<![CDATA["):
                    raise self.error("unexpected markup declaration")
            else:
                elem.children.append(self.element(depth + 1))


def parse_xml(data, filename="<config>"):
    """Parse bytes or str into the root Element; raises ConfigError with a position."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("file is larger than 1 MiB", filename)
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeError:
            line = data.count(b"\n", 0, _first_bad_utf8(data)) + 1
            raise ConfigError("not valid UTF-8", filename, line)
    if data.startswith("\ufeff"):
        data = data[1:]
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in data:
        raise ConfigError("NUL byte in file", filename, data.count("\n", 0, data.find("\x00")) + 1)
    return _Parser(data, filename).document()


def _first_bad_utf8(data):
    """Offset of the first byte that makes `data` invalid UTF-8 (for the error's line)."""
    low, high = 0, len(data)
    while high - low > 1:
        mid = (low + high) // 2
        try:
            data[:mid].decode("utf-8")
            low = mid
        except UnicodeError:
            high = mid
    return low


# ---------------------------------------------------------------------------------------------
# Values

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_seconds(text):
    """'15', '2.5', '4m', '1h' -> seconds as a float; ValueError with a reason otherwise."""
    word = text.strip()
    scale = 1
    if word and word[-1] in TIME_UNITS:
        scale = TIME_UNITS[word[-1]]
        word = word[:-1]
    if not word or not _is_decimal(word):
        raise ValueError("%r is not a time (examples: 15, 2.5, 4m, 1h)" % text.strip())
    return float(word) * scale


def _is_decimal(word):
    digits = word.replace(".", "", 1)
    return digits.isdigit() and len(word) < 20


def parse_bool(text):
    word = text.strip().lower()
    if word in ("1", "yes", "on", "true", "enabled"):
        return True
    if word in ("0", "no", "off", "false", "disabled"):
        return False
    raise ValueError("%r is not a boolean (use 0 or 1)" % text.strip())


def parse_count(text, minimum):
    word = text.strip()
    if not word.isdigit() or len(word) > 9 or int(word) < minimum:
        raise ValueError("%r is not a whole number >= %d" % (word, minimum))
    return int(word)


def format_seconds(seconds):
    """12.0 -> '12', 2.5 -> '2.5': how times appear in script arguments and output."""
    whole = int(seconds + 0.5)
    if abs(seconds - whole) < 1e-6:
        return str(whole)
    return ("%.3f" % seconds).rstrip("0").rstrip(".")


def to_ticks(seconds, interval):
    """Round half up of seconds / interval, at least 1 (the epsilon absorbs float error)."""
    return max(1, int(seconds / interval + 0.5 + 1e-9))


def split_words(text):
    """Split a script line into words: whitespace separates, '...' and "..." group."""
    words = []
    word = []
    in_word = False
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                word.append(ch)
        elif ch in "'\"":
            quote = ch
            in_word = True
        elif ch in " \t\n":
            if in_word:
                words.append("".join(word))
                word = []
                in_word = False
        else:
            word.append(ch)
            in_word = True
    if quote:
        raise ValueError("unclosed %s quote" % quote)
    if in_word:
        words.append("".join(word))
    return words


def absolute_dir(path):
    """The directory holding `path`, made absolute (relative script paths resolve from it)."""
    i = path.rfind("/")
    head = path[:i] if i > 0 else ("/" if i == 0 else "")
    if head.startswith("/"):
        return head
    return join_path(os.getcwd(), head) if head else os.getcwd()


def join_path(base, relative):
    while relative.startswith("./"):
        relative = relative[2:]
    return base.rstrip("/") + "/" + relative


# ---------------------------------------------------------------------------------------------
# The configuration

class Script:
    """A command to run for an event: its argv words, when (ticks), and its place in the config."""

    def __init__(self, event, step, argv, ticks, line):
        self.event = event
        self.step = step          # 1-based index among the entries of its event
        self.argv = argv          # list of words; event arguments are appended when run
        self.ticks = ticks        # action: silent ticks; retry: period in ticks; else 0
        self.line = line


class Config:
    """Everything the daemon needs, already validated and converted to ticks."""

    def __init__(self, filename):
        self.filename = filename
        self.devices = []
        self.interval = 1.0
        self.pidfile = None
        self.script_timeout = 60.0
        self.max_scripts = 8
        self.trace = False
        self.hotplug = False
        self.actions = []
        self.retries = []
        self.restores = []
        self.post_restores = []
        self.warnings = []      # (line, message) worth showing, e.g. legacy elements
        self.raised = []        # (script, seconds) whose time rounded to 0 ticks and became 1

    def ladder_end(self):
        """L: the tick count of the last action (0 without actions); retries count from it."""
        end = 0
        for action in self.actions:
            if action.ticks > end:
                end = action.ticks
        return end


# Allowed children per element path; anything else is a typo worth an error.
ROOT_CHILDREN = ("net_devices", "interval", "pidfile", "script_timeout", "max_scripts", "trace",
                 "hotplug", "actions", "retry_actions", "restore_dev", "post_restore_any",
                 "on_restore")
SINGLE_VALUES = ("interval", "pidfile", "script_timeout", "max_scripts", "trace", "hotplug")


class _Loader:
    def __init__(self, filename):
        self.filename = filename
        self.base_dir = absolute_dir(filename)
        self.config = Config(filename)

    def error(self, message, elem):
        return ConfigError(message, self.filename, elem.line, elem.col)

    def only_text(self, elem, path):
        if elem.children:
            child = elem.children[0]
            raise self.error("unknown element <%s> in %s" % (child.tag, path), child)
        if elem.attrs:
            raise self.error("<%s> takes no attributes" % elem.tag, elem)
        return elem.text.strip()

    def children(self, elem, path, allowed):
        if elem.attrs:
            raise self.error("<%s> takes no attributes" % elem.tag, elem)
        if elem.text.strip():
            raise self.error("unexpected text in %s" % path, elem)
        for child in elem.children:
            if child.tag not in allowed:
                raise self.error("unknown element <%s> in %s" % (child.tag, path), child)
        return elem.children

    def value(self, elem, path, parse):
        text = self.only_text(elem, path + "/" + elem.tag)
        try:
            return parse(text)
        except ValueError as err:
            raise self.error("<%s>: %s" % (elem.tag, err.args[0]), elem)

    def script(self, elem, path, event, step, ticks):
        text = self.only_text(elem, path + "/script")
        try:
            argv = split_words(text)
        except ValueError as err:
            raise self.error("<script>: " + err.args[0], elem)
        if not argv:
            raise self.error("empty <script> in " + path, elem)
        if "/" in argv[0] and not argv[0].startswith("/"):
            argv[0] = join_path(self.base_dir, argv[0])
        return Script(event, step, argv, ticks, elem.line)

    def load(self, root):
        config = self.config
        if root.tag != "tun_mon":
            raise self.error("the root element must be <tun_mon>, not <%s>" % root.tag, root)
        seen = {}
        for elem in self.children(root, "tun_mon", ROOT_CHILDREN):
            if elem.tag in SINGLE_VALUES and elem.tag in seen:
                raise self.error("<%s> given twice (first at line %d)"
                                 % (elem.tag, seen[elem.tag].line), elem)
            seen[elem.tag] = elem
        # The interval first: every time converts to ticks with it.
        if "interval" in seen:
            config.interval = self.value(seen["interval"], "tun_mon", parse_seconds)
            if config.interval < MIN_INTERVAL:
                raise self.error("<interval> must be at least %g s" % MIN_INTERVAL,
                                 seen["interval"])
        if "pidfile" in seen:
            config.pidfile = self.only_text(seen["pidfile"], "tun_mon/pidfile") or None
            if config.pidfile and not config.pidfile.startswith("/"):
                config.pidfile = join_path(self.base_dir, config.pidfile)
        if "script_timeout" in seen:
            config.script_timeout = self.value(seen["script_timeout"], "tun_mon", parse_seconds)
            if config.script_timeout <= 0:
                raise self.error("<script_timeout> must be more than 0", seen["script_timeout"])
        if "max_scripts" in seen:
            config.max_scripts = self.value(seen["max_scripts"], "tun_mon",
                                            lambda text: parse_count(text, 1))
        if "trace" in seen:
            config.trace = self.value(seen["trace"], "tun_mon", parse_bool)
        if "hotplug" in seen:
            config.hotplug = self.value(seen["hotplug"], "tun_mon", parse_bool)
        for elem in root.children:
            if elem.tag == "net_devices":
                self.devices(elem)
            elif elem.tag == "actions":
                self.actions(elem)
            elif elem.tag == "retry_actions":
                self.retries(elem)
            elif elem.tag in ("restore_dev", "on_restore", "post_restore_any"):
                self.plain_scripts(elem)
        if not config.devices:
            raise ConfigError("no <net_devices><net_device> to watch", self.filename, root.line,
                              root.col)
        return config

    def devices(self, elem):
        for dev in self.children(elem, "tun_mon/net_devices", ("net_device",)):
            name = self.only_text(dev, "tun_mon/net_devices/net_device")
            if not name or len(name) > 15 or ":" in name or "/" in name or " " in name:
                raise self.error("%r is not a network interface name" % name, dev)
            if name in self.config.devices:
                raise self.error("device %s listed twice" % name, dev)
            self.config.devices.append(name)

    def actions(self, elem):
        path = "tun_mon/actions"
        for entry in self.children(elem, path, ("action",)):
            self.timed_script(entry, path + "/action", EVENT_ACTION, ("time",),
                              self.config.actions)

    def retries(self, elem):
        path = "tun_mon/retry_actions"
        for entry in self.children(elem, path, ("retry", "action")):
            self.timed_script(entry, path + "/" + entry.tag, EVENT_RETRY, ("interval", "time"),
                              self.config.retries)

    def timed_script(self, entry, path, event, time_tags, into):
        fields = {}
        for child in self.children(entry, path, time_tags + ("script",)):
            key = "time" if child.tag in time_tags else "script"
            if key in fields:
                raise self.error("<%s> given twice in %s" % (child.tag, path), child)
            fields[key] = child
        if "time" not in fields:
            raise self.error("%s needs <%s>" % (path, time_tags[0]), entry)
        if "script" not in fields:
            raise self.error("%s needs <script>" % path, entry)
        seconds = self.value(fields["time"], path, parse_seconds)
        ticks = to_ticks(seconds, self.config.interval)
        script = self.script(fields["script"], path, event, len(into) + 1, ticks)
        if seconds / self.config.interval + 0.5 + 1e-9 < 1:
            self.config.raised.append((script, seconds))
        into.append(script)

    def plain_scripts(self, elem):
        path = "tun_mon/" + elem.tag
        if elem.tag == "on_restore":
            self.config.warnings.append(
                (elem.line, "<on_restore> is the old name of <restore_dev>; please rename it"))
        if elem.tag == "post_restore_any":
            event, into = EVENT_POST_RESTORE, self.config.post_restores
        else:
            event, into = EVENT_RESTORE, self.config.restores
        for child in self.children(elem, path, ("script",)):
            into.append(self.script(child, path, event, len(into) + 1, 0))


def parse_config(data, filename="<config>"):
    """Parse config text (str or bytes) into a Config; raises ConfigError."""
    return _Loader(filename).load(parse_xml(data, filename))


def load_config(path):
    """Read and parse a config file; raises ConfigError (also for an unreadable file)."""
    try:
        size = os.stat(path)[6]
        if size > MAX_CONFIG_BYTES:
            raise ConfigError("file is larger than 1 MiB", path)
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError("cannot read config: %s" % os_error_text(err), path)
    return parse_config(data, path)


def os_error_text(err):
    """'No such file or directory' where the interpreter knows it, else 'errno N'."""
    if len(err.args) > 1:
        return str(err.args[1])
    code = err.args[0] if err.args else 0
    return ERRNO_TEXT.get(code, "errno %s" % code)


# MicroPython's OSError carries only the number; these are the ones a user meets.
ERRNO_TEXT = {1: "Operation not permitted", 2: "No such file or directory",
              11: "Resource temporarily unavailable", 12: "Out of memory",
              13: "Permission denied", 20: "Not a directory", 21: "Is a directory",
              28: "No space left on device"}
