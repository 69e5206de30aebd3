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
import sys

MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 32
MIN_INTERVAL = 0.1
# The live loop counts in milliseconds that a 32-bit MicroPython wraps every 2^30 (12 days),
# compared safely up to half of that: the interval and a script's timeout stay within a day.
MAX_CLOCK_SECONDS = 86400.0

EVENT_ACTION = "action"
EVENT_RETRY = "retry"
EVENT_RESTORE = "restore"
EVENT_POST_RESTORE = "post_restore_any"


class ConfigError(Exception):
    """A config problem; str() is the one line a user sees: file:line:col: message."""

    def __init__(self, message, filename=None, line=None, col=None):
        super().__init__(message)
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
        if pos < self.counted_to:       # an earlier position (an error at an opening tag)
            self.line, self.line_start, self.counted_to = 1, 0, 0
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
            if semi < 0 or (semi - amp > 12 and raw[amp + 1:amp + 2] != "#"):
                raise self.error("bare '&' (write &amp;)", start + amp)
            ref = raw[amp + 1:semi]
            if ref.startswith("#"):
                code = char_reference(ref)
                if not is_xml_char(code):
                    raise self.error("bad character reference &%s;" % shown(ref), start + amp)
                out.append(chr(code))
            elif ref in ENTITIES:
                out.append(ENTITIES[ref])
            else:
                raise self.error("unknown entity &%s; (only lt gt amp quot apos)" % shown(ref),
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
                end = self.text.find("-->", self.pos + 4)
                if end < 0:
                    raise self.error("unterminated comment")
                double_dash = self.text.find("--", self.pos + 4, end)
                if double_dash >= 0:
                    raise self.error("'--' inside a comment", double_dash)
                self.pos = end + 3
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
            data = decode_utf8(data)
        except UnicodeError:
            line = data.count(b"\n", 0, _first_bad_utf8(data)) + 1
            raise ConfigError("not valid UTF-8", filename, line)
    if data.startswith("\ufeff"):
        data = data[1:]
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    for code in range(32):
        # XML allows no control characters but tab and newline (CR is gone by now): a NUL
        # could not even be passed to exec.
        if code != 9 and code != 10 and chr(code) in data:
            at = data.find(chr(code))
            what = "NUL byte" if code == 0 else "control character %d" % code
            raise ConfigError(what + " in file", filename,
                              data.count("\n", 0, at) + 1, at - data.rfind("\n", 0, at))
    return _Parser(data, filename).document()


def char_reference(ref):
    """The code point of '#65' or '#x41' (the text between & and ;), -1 if malformed.  The
    digits are checked here: int() also takes '+65', '6_5', spaces and other scripts' digits."""
    hexadecimal = ref[1:2] in ("x", "X")
    digits = ref[2:] if hexadecimal else ref[1:]
    allowed = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
    if not digits:
        return -1
    for ch in digits:
        if ch not in allowed:
            return -1
    digits = digits.lstrip("0") or "0"      # leading zeros are allowed, and say nothing
    return int(digits, 16 if hexadecimal else 10) if len(digits) <= 8 else -1


def is_xml_char(code):
    """XML's Char production: what a character reference may name."""
    return (code in (9, 10, 13) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def decode_utf8(data):
    """bytes -> str; UnicodeError unless valid UTF-8, on both interpreters.  MicroPython's
    decoder checks only the shape of each sequence: alone it takes overlong forms (b"\xc0\xaf"
    for "/", a way round any check for '/'), surrogates and code points past U+10FFFF."""
    text = data.decode("utf-8")
    if len(text) != len(data) and sys.implementation.name == "micropython":
        shortest = 0     # bytes the characters take in their shortest form: less if overlong
        for ch in text:
            code = ord(ch)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise UnicodeError("surrogate or past U+10FFFF")
            shortest += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
        if shortest != len(data):
            raise UnicodeError("overlong form")
    return text


def _first_bad_utf8(data):
    """Offset of the first byte that makes `data` invalid UTF-8 (for the error's line)."""
    low, high = 0, len(data)
    while high - low > 1:
        mid = (low + high) // 2
        try:
            decode_utf8(data[:mid])
            low = mid
        except UnicodeError:
            high = mid
    return low


# ---------------------------------------------------------------------------------------------
# Values

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def to_ms(seconds):
    return int(seconds * 1000 + 0.5)


def parse_seconds(text):
    """'15', '2.5', '4m', '1h' -> seconds as a float; ValueError with a reason otherwise."""
    word = text.strip()
    scale = 1
    if word and word[-1] in TIME_UNITS:
        scale = TIME_UNITS[word[-1]]
        word = word[:-1]
    if not word or not _is_decimal(word):
        raise ValueError("%r is not a time (examples: 15, 2.5, 4m, 1h)" % shown(text.strip()))
    return float(word) * scale


def _is_decimal(word):
    return is_digits(word.replace(".", "", 1)) and len(word) < 20


def is_digits(word):
    """ASCII digits only, at least one: CPython's isdigit() and int() also take '٣' and '²',
    MicroPython's do not, and a config must mean the same to both."""
    if not word:
        return False
    for ch in word:
        if ch < "0" or ch > "9":
            return False
    return True


def shown(text, limit=40):
    """A value as quoted in an error line: a megabyte of it helps nobody."""
    return text if len(text) <= limit else text[:limit] + "..."


def parse_bool(text):
    word = text.strip().lower()
    if word in ("1", "yes", "on", "true", "enabled"):
        return True
    if word in ("0", "no", "off", "false", "disabled"):
        return False
    raise ValueError("%r is not a boolean (use 0 or 1)" % shown(text.strip()))


def parse_count(text, minimum):
    word = text.strip()
    if not is_digits(word) or len(word) > 9 or int(word) < minimum:
        raise ValueError("%r is not a whole number >= %d" % (shown(word), minimum))
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

    def __init__(self, event, step, argv, ticks, line, devices=None):
        self.event = event
        self.step = step          # 1-based index among the entries of its event
        self.argv = argv          # list of words; event arguments are appended when run
        self.ticks = ticks        # action: silent ticks; retry: period in ticks; else 0
        self.line = line
        self.devices = devices    # names it is limited to, or None for every device

    def applies_to(self, device):
        return self.devices is None or device in self.devices


class Device:
    """One watched interface and its own settings."""

    def __init__(self, name, line):
        self.name = name
        self.line = line
        self.target = None            # address the built-in probe and ping scripts aim at
        self.probe = None             # "icmp" or None
        self.min_rx_bytes = 0         # a tick with no more bytes than this counts as silent
        self.depends = None           # name of the underlay device
        self.link_down_is_silence = None   # None: the global setting


class Stats:
    """Where the statistics stream goes (<stats>), if anywhere."""

    def __init__(self):
        self.interval = 10.0
        self.file = None
        self.max_size = 1024 * 1024
        self.udp = None               # (host, port)
        self.format = "json"


class Config:
    """Everything the daemon needs, already validated and converted to ticks."""

    def __init__(self, filename):
        self.filename = filename
        self.devices = []             # names, in config order
        self.device = {}              # name -> Device
        self.interval = 1.0
        self.pidfile = None
        self.script_timeout = 60.0
        self.max_scripts = 8
        self.trace = False
        self.hotplug = False
        self.counter_source = "auto"
        self.link_down_is_silence = True
        self.status_file = "/var/run/tunmon/status.json"
        self.status_interval = 10.0
        self.stats = None
        self.actions = []
        self.retries = []
        self.restores = []
        self.post_restores = []
        self.warnings = []      # (line, message) worth showing, e.g. legacy elements
        self.raised = []        # (script, seconds) whose time rounded to 0 ticks and became 1

    def ladder_end(self, device=None):
        """L: the tick count of the last action (0 without actions); retries count from it.

        With a device, only the actions that apply to it count: each device has its ladder.
        """
        end = 0
        for action in self.actions:
            if action.ticks > end and (device is None or action.applies_to(device)):
                end = action.ticks
        return end


def _interval(text):
    seconds = parse_seconds(text)
    if seconds < MIN_INTERVAL:
        raise ValueError("must be at least %g s" % MIN_INTERVAL)
    # In whole milliseconds, as the live loop keeps time: the rules' seconds (ticks times
    # the interval) are then the loop's to the millisecond.
    return _at_most_a_day(round(seconds * 1000) / 1000.0)


def _script_timeout(text):
    return _at_most_a_day(_positive_seconds(text))


def _at_most_a_day(seconds):
    if seconds > MAX_CLOCK_SECONDS:
        raise ValueError("must be at most %g s (a day)" % MAX_CLOCK_SECONDS)
    return seconds


def _positive_seconds(text):
    seconds = parse_seconds(text)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


def _text(text):
    if not text:
        raise ValueError("is empty")
    return text


def _choice(*allowed):
    def parse(text):
        if text not in allowed:
            raise ValueError("%r is not one of %s" % (shown(text), ", ".join(allowed)))
        return text
    return parse


SIZE_UNITS = {"k": 1024, "M": 1024 * 1024}


def parse_size(text):
    """'4096', '64k', '1M' -> bytes."""
    word = text.strip()
    scale = 1
    if word[-1:] in SIZE_UNITS:
        scale = SIZE_UNITS[word[-1]]
        word = word[:-1]
    return parse_count(word, 1) * scale


def parse_host_port(text):
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not is_digits(port) or not 0 < int(port) < 65536:
        raise ValueError("%r is not host:port" % shown(text.strip()))
    return (host, int(port))


# Single-valued elements: tag -> (attribute of the object, parser).
GLOBAL_VALUES = {
    "interval": ("interval", _interval),
    "pidfile": ("pidfile", _text),
    "script_timeout": ("script_timeout", _script_timeout),
    "max_scripts": ("max_scripts", lambda text: parse_count(text, 1)),
    "trace": ("trace", parse_bool),
    "hotplug": ("hotplug", parse_bool),
    "counter_source": ("counter_source", _choice("auto", "proc", "sysfs")),
    "link_down_is_silence": ("link_down_is_silence", parse_bool),
    "status_file": ("status_file", _text),
    "status_interval": ("status_interval", _positive_seconds),
}
STATS_VALUES = {
    "interval": ("interval", _positive_seconds),
    "file": ("file", _text),
    "max_size": ("max_size", parse_size),
    "udp": ("udp", parse_host_port),
    "format": ("format", _choice("json", "influx")),
}
DEVICE_ATTRIBUTES = {
    "target": ("target", _text),
    "probe": ("probe", _choice("icmp", "none")),
    "min_rx_bytes": ("min_rx_bytes", lambda text: parse_count(text, 0)),
    "depends": ("depends", _text),
    "link_down_is_silence": ("link_down_is_silence", parse_bool),
}
LIST_ELEMENTS = ("net_devices", "actions", "retry_actions", "restore_dev", "post_restore_any",
                 "on_restore", "stats")
PATH_VALUES = ("pidfile", "status_file", "file")


class _Loader:
    def __init__(self, filename):
        self.filename = filename
        self.base_dir = absolute_dir(filename)
        self.config = Config(filename)
        self.device_elements = {}

    def error(self, message, elem):
        return ConfigError(message, self.filename, elem.line, elem.col)

    def check_attributes(self, elem, allowed):
        for name in elem.attrs:
            if name not in allowed:
                raise self.error("<%s> has no attribute %s" % (elem.tag, name), elem)

    def only_text(self, elem, path, attributes=()):
        if elem.children:
            child = elem.children[0]
            raise self.error("unknown element <%s> in %s" % (child.tag, path), child)
        self.check_attributes(elem, attributes)
        return elem.text.strip()

    def children(self, elem, path, allowed, attributes=()):
        self.check_attributes(elem, attributes)
        if elem.text.strip():
            raise self.error("unexpected text in %s" % path, elem)
        for child in elem.children:
            if child.tag not in allowed:
                raise self.error("unknown element <%s> in %s" % (child.tag, path), child)
        return elem.children

    def parsed(self, elem, name, text, parse, key=None):
        try:
            value = parse(text)
        except ValueError as err:
            raise self.error("%s: %s" % (name, err.args[0]), elem)
        if key in PATH_VALUES and not value.startswith("/"):
            value = join_path(self.base_dir, value)
        return value

    def values(self, elem, path, table, into):
        """Single-valued children of `elem` (each at most once) set on `into`."""
        seen = {}
        for child in elem.children:
            if child.tag not in table:
                continue
            if child.tag in seen:
                raise self.error("<%s> given twice in %s (first at line %d)"
                                 % (child.tag, path, seen[child.tag].line), child)
            seen[child.tag] = child
            attribute, parse = table[child.tag]
            text = self.only_text(child, path + "/" + child.tag)
            setattr(into, attribute,
                    self.parsed(child, "<%s>" % child.tag, text, parse, child.tag))

    def device_list(self, elem):
        """The `device="a b"` limit of a ladder entry: a list of names, or None for all."""
        text = elem.attrs.get("device")
        if text is None:
            return None
        names = text.split()
        if not names:
            raise self.error("empty device=\"\" (leave it out to apply to every device)", elem)
        return names

    def script(self, elem, path, event, step, ticks, devices):
        text = self.only_text(elem, path + "/script", ("device",))
        try:
            argv = split_words(text)
        except ValueError as err:
            raise self.error("<script>: " + err.args[0], elem)
        if not argv:
            raise self.error("empty <script> in " + path, elem)
        if "/" in argv[0] and not argv[0].startswith("/"):
            argv[0] = join_path(self.base_dir, argv[0])
        if devices is None:
            devices = self.device_list(elem)
        return Script(event, step, argv, ticks, elem.line, devices)

    def load(self, root):
        config = self.config
        if root.tag != "tun_mon":
            raise self.error("the root element must be <tun_mon>, not <%s>" % root.tag, root)
        self.children(root, "tun_mon", tuple(GLOBAL_VALUES) + LIST_ELEMENTS)
        # The single values first: every time converts to ticks with the interval.
        self.values(root, "tun_mon", GLOBAL_VALUES, config)
        for elem in root.children:
            if elem.tag == "net_devices":
                self.devices(elem)
            elif elem.tag == "actions":
                self.actions(elem)
            elif elem.tag == "retry_actions":
                self.retries(elem)
            elif elem.tag in ("restore_dev", "on_restore", "post_restore_any"):
                self.plain_scripts(elem)
            elif elem.tag == "stats":
                self.stats(elem)
        if not config.devices:
            raise ConfigError("no <net_devices><net_device> to watch", self.filename, root.line,
                              root.col)
        self.check_references()
        return config

    def devices(self, elem):
        for dev in self.children(elem, "tun_mon/net_devices", ("net_device",)):
            name = self.only_text(dev, "tun_mon/net_devices/net_device", DEVICE_ATTRIBUTES)
            if not valid_interface_name(name):
                raise self.error("%r is not a network interface name" % shown(name), dev)
            if name in self.config.device:
                raise self.error("device %s listed twice" % name, dev)
            device = Device(name, dev.line)
            for attribute in dev.attrs:
                key, parse = DEVICE_ATTRIBUTES[attribute]
                setattr(device, key, self.parsed(dev, attribute, dev.attrs[attribute], parse))
            if device.probe == "none":
                device.probe = None
            if device.probe and not device.target:
                raise self.error("probe=\"%s\" needs target=\"address\"" % device.probe, dev)
            self.config.devices.append(name)
            self.config.device[name] = device
            self.device_elements[name] = dev

    def check_references(self):
        """Names in depends= and device= must be watched devices; dependencies form no cycle."""
        config = self.config
        for name in config.devices:
            underlay = config.device[name].depends
            if underlay is None:
                continue
            elem = self.device_elements[name]
            if underlay not in config.device:
                raise self.error("depends=\"%s\": not a watched device" % underlay, elem)
            chain = [name]
            while underlay is not None:
                if underlay in chain:
                    raise self.error("dependency cycle: %s" % " -> ".join(chain + [underlay]),
                                     elem)
                chain.append(underlay)
                underlay = config.device[underlay].depends
        for script in config.actions + config.retries + config.restores + config.post_restores:
            for name in script.devices or ():
                if name not in config.device:
                    raise ConfigError("device=\"%s\": not a watched device" % name,
                                      self.filename, script.line)

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
        for child in self.children(entry, path, time_tags + ("script",), ("device",)):
            key = "time" if child.tag in time_tags else "script"
            if key in fields:
                raise self.error("<%s> given twice in %s" % (child.tag, path), child)
            fields[key] = child
        if "time" not in fields:
            raise self.error("%s needs <%s>" % (path, time_tags[0]), entry)
        if "script" not in fields:
            raise self.error("%s needs <script>" % path, entry)
        time_elem = fields["time"]
        seconds = self.parsed(time_elem, "<%s>" % time_elem.tag,
                              self.only_text(time_elem, path + "/" + time_elem.tag),
                              parse_seconds)
        ticks = to_ticks(seconds, self.config.interval)
        script = self.script(fields["script"], path, event, len(into) + 1, ticks,
                             self.device_list(entry))
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
            into.append(self.script(child, path, event, len(into) + 1, 0, None))

    def stats(self, elem):
        if self.config.stats is not None:
            raise self.error("<stats> given twice", elem)
        stats = Stats()
        self.children(elem, "tun_mon/stats", tuple(STATS_VALUES))
        self.values(elem, "tun_mon/stats", STATS_VALUES, stats)
        if not stats.file and not stats.udp:
            raise self.error("<stats> needs <file> or <udp> (or both)", elem)
        self.config.stats = stats


def valid_interface_name(name):
    """What Linux accepts (dev_valid_name): 1-15 bytes, not . or .., no '/', ':', whitespace
    or NUL."""
    if not name or len(name.encode()) > 15 or name in (".", ".."):
        return False
    for ch in name:
        if ch in "/: \t\n\v\f\r\x00":
            return False
    return True


def parse_config(data, filename="<config>"):
    """Parse config text (str or bytes) into a Config; raises ConfigError."""
    return _Loader(filename).load(parse_xml(data, filename))


def load_config(path):
    """Read and parse a config file; raises ConfigError (also for an unreadable file)."""
    try:
        info = os.stat(path)
        if info[0] & 0o170000 not in (0o100000, 0o040000):
            # A FIFO or a device would block the open, and a reload with it the whole loop.
            # (A directory fails at the open with EISDIR, the clearer message.)
            raise ConfigError("not a regular file", path)
        size = info[6]
        if size > MAX_CONFIG_BYTES:
            raise ConfigError("file is larger than 1 MiB", path)
        with open(path, "rb") as f:
            # Not MAX_CONFIG_BYTES: MicroPython would reserve that whole MiB up front.
            data = f.read(size + 1)
    except OSError as err:
        raise ConfigError("cannot read config: %s" % os_error_text(err), path)
    try:
        return parse_config(data, path)
    except MemoryError:
        # A small MicroPython heap: say so in one line rather than die with a traceback.
        raise ConfigError("not enough memory to parse a %d-byte config" % len(data), path)


def write_temporary(path, write):
    """Make a new file with an unguessable name beside `path`, filled by `write(f)` with f open
    for binary writing; returns its name.  (A function rather than the text, so that a long
    text such as the status file of many devices is written in pieces and never held whole:
    on MicroPython that peak set the heap.)

    Unguessable because a name known in advance could be a symlink planted by another user
    in a shared directory, and writing would follow it.  Rename it over `path` to publish.
    """
    temp = "%s.%012x.tmp" % (path, int.from_bytes(os.urandom(6), "big"))
    try:
        with open(temp, "wb") as f:
            write(f)
    except BaseException:
        try:
            os.remove(temp)     # a full disk (or a failed write) leaves a part behind otherwise
        except OSError:
            pass
        raise
    return temp


def write_atomically(path, write):
    """Replace `path` with what `write(f)` writes, so that a reader sees the old or the new
    file, never a part."""
    temp = write_temporary(path, write)
    try:
        os.rename(temp, path)
    except OSError:
        try:
            os.remove(temp)
        except OSError:
            pass
        raise


def is_tunmon(pid):
    """Is `pid` a live tunmon (and not another program that got a stale pidfile's pid)?
    An interpreter or the launcher with tunmon in its arguments: `tail -f tunmon.log` is not."""
    if pid <= 0:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            words = f.read(4096).split(b"\0")
    except OSError:
        return False
    program = words[0].rsplit(b"/", 1)[-1]
    return (b"python" in program or b"tunmon" in program) and \
        any(b"tunmon" in word for word in words[1:])


def log(level, message):
    """One line on stderr, which procd hands to syslog."""
    try:
        sys.stderr.write(level + ": " + message + "\n")
    except OSError:
        pass    # stderr closed (its reader gone): the monitor must go on without its log


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
