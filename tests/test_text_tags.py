from l2ray.text import count_tag_switches, insert_tags, parse_tagged, strip_tags, tag_languages


def test_insert_tags_marks_start_and_every_switch_only():
    fragments = [
        ("en", "So x = 2. "),
        ("zh", "等等，x 可以是负数。"),
        ("zh", "所以 x = -2。"),
        ("en", " Done."),
    ]
    tagged = insert_tags(fragments)
    assert tagged == "<|lang:en|>So x = 2. <|lang:zh|>等等，x 可以是负数。所以 x = -2。<|lang:en|> Done."
    assert tag_languages(tagged) == ["en", "zh", "en"]
    assert count_tag_switches(tagged) == 2
    assert strip_tags(tagged) == "".join(text for _, text in fragments)


def test_parse_round_trip():
    tagged = "<|lang:fr|>Attendez, $x=1$. <|lang:de|>Moment, nein. <|lang:fr|>Donc $x=2$."
    pairs = parse_tagged(tagged)
    assert pairs == [("fr", "Attendez, $x=1$. "), ("de", "Moment, nein. "), ("fr", "Donc $x=2$.")]
    assert insert_tags(pairs) == tagged


def test_parse_untagged_prefix_gets_default_and_lead_false_skips_first_tag():
    assert parse_tagged("plain <|lang:ja|>日本語", default="en") == [("en", "plain "), ("ja", "日本語")]
    assert insert_tags([("en", "a"), ("ko", "b")], lead=False) == "a<|lang:ko|>b"
    assert count_tag_switches("<|lang:en|>a<|lang:en|>b") == 0
