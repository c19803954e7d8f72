"""ExtractiveGenerator: the passages that answer, copied from the sources and cited; the
fixed not-found answer, citing nothing, when the sources do not say. Runs the real local
encoder (the service's own embedder)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from rag_service.config import Settings
from rag_service.providers.base import NOT_FOUND_ANSWER, Source
from rag_service.providers.citations import cited_numbers
from rag_service.providers.extractive import (
    MAX_ANSWER_CHARS,
    MAX_EMBEDDED_PASSAGES,
    MAX_PASSAGES,
    MIN_QUESTION_COVERAGE,
    STRONG_MATCH_SCORE,
    Candidate,
    Candidates,
    ExtractiveGenerator,
    Passage,
    PassageScorer,
    Thresholds,
    choose,
    content_terms,
    focused_on,
    missing_names,
    names_asked_kind,
    next_sentences,
    score_passages,
    source_passages,
    spells_out_asked_acronym,
    split_sentences,
    text_blocks,
)
from rag_service.providers.local_embedder import LocalEmbedder

SOURCES = [
    Source(1, "Handbook", "Welcome to Acme. Our office opens at 9am on weekdays.\nParking is free for employees."),
    Source(
        2,
        "Refunds",
        "Customers can request a refund within 30 days of purchase. Refunds are paid to the original "
        "payment method. Damaged items are refunded in full, e.g. broken screens.",
    ),
    Source(3, "Security", "Passwords must be rotated every 90 days. Two-factor authentication is mandatory."),
]

# A man page as `man` renders it: option lines with their descriptions indented below.
FSTAB = """SYNOPSIS
       /etc/fstab

DESCRIPTION
       The file fstab contains descriptive information about the filesystems the system can mount.

   The fourth field (fs_mntops).
       This field describes the mount options associated with the filesystem.

       Basic filesystem-independent options are:

       defaults
           use default options: rw, suid, dev, exec, auto, nouser, and async.

       noauto
           do not mount when mount -a is given (e.g., at boot time)

       nofail
           do not report errors for this device if it does not exist.

   The sixth field (fs_passno).
       This field is used by fsck(8) to determine the order in which filesystem checks are done at boot time. The
       root filesystem should be specified with a fs_passno of 1.
"""
PROCPS = """DESCRIPTION
       sysctl is used to modify kernel parameters at runtime. The parameters available are those listed under /proc/sys/.

OPTIONS
       -w, --write
              Use this option when all arguments prescribe a key to be set.

       -p[FILE], --load[=FILE]
              Load in sysctl settings from the file specified or /etc/sysctl.conf if none given.

REPORTING BUGS
       Report bugs to bug-tar@gnu.org. General help using GNU software: <https://www.gnu.org/gethelp/>.
"""
TABLE = """# Limits

| plan | storage | users |
|------|---------|-------|
| Free | 5 GB | 3 |
| Team | 100 GB | 50 |

- Uploads larger than 2 GB are refused.
- Deleted files stay in the trash for 30 days.
"""


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> LocalEmbedder:
    return LocalEmbedder(Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("extractive")))


@pytest.fixture
def generator(embedder) -> ExtractiveGenerator:
    return ExtractiveGenerator(embedder)


async def answer(generator: ExtractiveGenerator, query: str, sources: list[Source] = SOURCES) -> tuple[list[str], str]:
    pieces = [p async for p in generator.stream(query, sources, [])]
    return pieces, "".join(pieces)


def answer_passages(text: str) -> list[tuple[str, int]]:
    """(passage, cited number) pairs of an extractive answer."""
    return [(s, int(n)) for s, n in re.findall(r"\s*(.+?) \[(\d+)\]", text)]


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_answer_passages_are_copied_and_cite_their_own_source(generator):
    pieces, text = await answer(generator, "How many days do customers have to request a refund?")
    pairs = answer_passages(text)
    assert pairs[0] == ("Customers can request a refund within 30 days of purchase.", 2)
    by_number = {s.number: flat(s.text) for s in SOURCES}
    for passage, number in pairs:
        assert passage in by_number[number]
    assert len(pieces) == len(pairs)  # one passage per streamed piece


async def test_picks_the_matching_source_only(generator):
    _, text = await answer(generator, "Is two-factor authentication mandatory?")
    assert cited_numbers(text) == [3]
    assert text.startswith("Two-factor authentication is mandatory. [3]")
    assert "refund" not in text.lower()


async def test_an_option_is_answered_with_its_name_and_description(generator):
    sources = [Source(1, "fstab(5)", FSTAB), Source(2, "sysctl(8)", PROCPS)]
    _, text = await answer(generator, "Which fstab mount option stops a filesystem from being mounted at boot?",
                           sources)
    assert "noauto: do not mount when mount -a is given (e.g., at boot time) [1]" in text
    assert cited_numbers(text) == [1] and "sysctl" not in text


async def test_a_sentence_under_a_heading_line_is_shown_with_it(generator):
    sources = [Source(1, "fstab(5)", FSTAB)]
    _, text = await answer(generator, "Which fstab field decides the order in which filesystems are checked by fsck?",
                           sources)
    assert "fs_passno" in text and cited_numbers(text) == [1]


async def test_a_table_row_or_a_list_item_is_an_answer(generator):
    sources = [Source(1, "Plans", TABLE)]
    _, rows = await answer(generator, "How much storage does the Team plan have?", sources)
    _, items = await answer(generator, "How long do deleted files stay in the trash?", sources)
    assert rows.startswith("| Team | 100 GB | 50 | [1]")
    assert items.startswith("Deleted files stay in the trash for 30 days. [1]")


async def test_no_off_topic_padding(generator):
    # The example: "Report bugs to bug-tar@gnu.org" added under a procps question.
    sources = [Source(1, "sysctl(8)", PROCPS), Source(2, "fstab(5)", FSTAB)]
    _, text = await answer(generator, "How do I load sysctl settings from a file?", sources)
    assert text.startswith("-p[FILE], --load[=FILE]: Load in sysctl settings from the file specified")
    assert "Report bugs" not in text and "fstab" not in text and cited_numbers(text) == [1]


async def test_answers_stay_short_and_are_made_of_passages_only(generator):
    many = [Source(i, f"t{i}", f"Refund rule number {i} applies to refund requests. Unrelated filler text here.")
            for i in range(1, 7)]
    _, text = await answer(generator, "Which refund rule applies to refund requests?", many)
    pairs = answer_passages(text)
    assert 1 <= len(pairs) <= MAX_PASSAGES and len(text) <= MAX_ANSWER_CHARS + 20
    leftover = text
    for passage, number in pairs:
        leftover = leftover.replace(f"{passage} [{number}]", "", 1)
    assert leftover.strip() == ""


async def test_overlapping_chunks_do_not_repeat_a_sentence(generator):
    repeated = "The backup runs every night at 2am."
    sources = [Source(1, "a", f"Intro text. {repeated}"), Source(2, "a", f"{repeated} Then the logs rotate.")]
    _, text = await answer(generator, "When does the backup run?", sources)
    assert text.count(repeated) == 1


@pytest.mark.parametrize("query", [
    "What is the capital of Mongolia?",
    "How do I list all pods in a namespace with kubectl?",
    "How do I set the maxmemory eviction policy in Redis?",
])
async def test_a_question_the_sources_do_not_answer_is_not_found_and_cites_nothing(generator, query):
    sources = [*SOURCES, Source(4, "fstab(5)", FSTAB), Source(5, "sysctl(8)", PROCPS)]
    pieces, text = await answer(generator, query, sources)
    assert pieces == [NOT_FOUND_ANSWER]
    assert cited_numbers(text) == []


async def test_empty_sources_or_a_stopword_question_are_not_found(generator):
    assert (await answer(generator, "How do refunds work?", []))[0] == [NOT_FOUND_ANSWER]
    assert (await answer(generator, "what is it and how?"))[0] == [NOT_FOUND_ANSWER]


async def test_is_deterministic(generator):
    first = await answer(generator, "refund damaged items original payment")
    for _ in range(3):
        assert await answer(generator, "refund damaged items original payment") == first


async def test_matches_word_forms(generator):
    # "refunded" in the source, "refunds" in the question.
    _, text = await answer(generator, "Are damaged items refunds complete?")
    assert "Damaged items are refunded in full, e.g. broken screens. [2]" in text


async def test_prefers_a_whole_sentence_over_a_chunk_starting_mid_sentence(generator):
    whole = "The audit log keeps every login for one year."
    sources = [
        Source(1, "a", "keeps every login for one year. Other things happen."),  # overlap fragment
        Source(2, "a", f"Intro here. {whole}"),
    ]
    _, text = await answer(generator, "How long does the audit log keep logins?", sources)
    assert text.startswith(f"{whole} [2]")


async def test_reuses_the_services_embedder_on_its_query_lane(embedder):
    tasks: list[str] = []

    class Watching:
        """The real embedder, with each call's task noted."""

        model_name, dimension = embedder.model_name, embedder.dimension
        count_tokens = embedder.count_tokens

        async def embed(self, texts, task="document"):
            tasks.append(task)
            return await embedder.embed(texts, task=task)

    _, text = await answer(ExtractiveGenerator(Watching()), "How many days do customers have to request a refund?")
    assert cited_numbers(text) == [2]
    # One encoder call per answer (question and passages together), queued as a query: it
    # runs on the encoder's worker threads, ahead of ingestion batches.
    assert tasks == ["query"]


def test_passages_carry_the_term_line_they_describe():
    passages = source_passages(Source(1, "fstab(5)", FSTAB))
    shown = [p.shown for p in passages]
    assert "noauto: do not mount when mount -a is given (e.g., at boot time)" in shown
    assert any(s.startswith("The sixth field (fs_passno). This field is used by fsck(8)") for s in shown)
    # Section headings (DESCRIPTION) label nothing; a term line is not a passage of its own.
    assert not any(s.startswith(("DESCRIPTION", "noauto [")) for s in shown)
    assert "The file fstab contains descriptive information about the filesystems the system can mount." in shown


def test_sentence_splitting_keeps_abbreviations_and_strips_list_markers():
    text = "Dr. Smith approves refunds! E.g. when damaged, e.g. broken. Done.\n- First item here\n2. Second step"
    assert split_sentences(text) == [
        "Dr. Smith approves refunds!",
        "E.g. when damaged, e.g. broken.",
        "Done.",
        "First item here",
        "Second step",
    ]
    for sentence in split_sentences(text):
        assert sentence in text


def test_hard_wrapped_paragraphs_keep_sentences_whole():
    text = "Backups run every night\nat 2am and are kept for\n30 days. Restores take an hour.\n\nNext paragraph here."
    assert split_sentences(text) == [
        "Backups run every night\nat 2am and are kept for\n30 days.",
        "Restores take an hour.",
        "Next paragraph here.",
    ]


async def test_a_one_sentence_document_answers_with_other_forms_of_its_words(generator):
    # One passage: a question word in no source ("trim" beside "trimmed") must not outweigh
    # the others, and "trimmed" meets "trim".
    sources = [Source(1, "Lighthouse", "Lighthouse keepers trimmed the lamp wicks every evening so the beam "
                                       "stayed bright all night.")]
    _, text = await answer(generator, "Why did keepers trim the wicks?", sources)
    assert text == f"{flat(sources[0].text)} [1]"


# login.defs(5) as `man` renders it: settings whose descriptions share most of their words.
LOGIN_DEFS = """DESCRIPTION
       The /etc/login.defs file defines the site-specific configuration for the shadow password suite.

       PASS_MIN_DAYS (number)
           The minimum number of days allowed between password changes. Any password changes
           attempted sooner than this will be rejected.

       PASS_MAX_DAYS (number)
           The maximum number of days a password may be used. If the password is older than this,
           a password change will be forced.

       PASS_WARN_AGE (number)
           The number of days warning given before a password expires.
"""
# systemd.timer(5): settings named in CamelCase, which questions spell as words.
TIMER = """OPTIONS
       OnCalendar=
           Defines realtime (i.e. wallclock) timers with calendar event expressions.

       AccuracySec=
           Defaults to 1min. Specify the accuracy the timer shall elapse with.

       RandomizedDelaySec=
           Delay the timer by a randomly selected, evenly distributed amount of time.

       Persistent=
           Takes a boolean argument. If true, the time when the service unit was last triggered is stored on disk.
"""
# A chunk of TRUNCATE(7) cut just before an option line: its first line lost its indentation.
TRUNCATE_CHUNK = """RESTART IDENTITY
\t   Automatically restart sequences owned by columns of the truncated table(s).

       CONTINUE IDENTITY
\t   Do not change the values of sequences. This is the default.

       The truncation is done in one transaction, so other sessions see all or none of it.
"""


async def test_the_passage_repeating_the_questions_phrase_wins_over_one_sharing_its_words(generator):
    sources = [Source(1, "login.defs(5)", LOGIN_DEFS)]
    _, text = await answer(generator, "Which login.defs setting sets the maximum number of days a password may be used?",
                           sources)
    assert text.startswith("PASS_MAX_DAYS (number): The maximum number of days a password may be used. [1]")


def test_word_pairs_of_the_question_score_the_passage_that_keeps_them_together():
    scorer = PassageScorer("Which setting sets the maximum number of days a password may be used?",
                           [Source(1, "login.defs(5)", LOGIN_DEFS)])
    phrase = {p.text: scorer.phrase(i) for i, p in enumerate(scorer.passages)}
    maximum = phrase["The maximum number of days a password may be used."]
    minimum = phrase["The minimum number of days allowed between password changes."]
    # The question's pairs: (set, set), (set, maximum), (maximum, number), (number, day),
    # (day, password), (password, may); the passage keeps the last four...
    assert maximum == pytest.approx(4 / 6)
    # ...where "minimum number of days allowed between password" keeps only (number, day).
    assert minimum == pytest.approx(1 / 6)


def test_camel_case_settings_give_the_words_they_are_made_of():
    assert {"accuracysec", "accuracy", "sec"} <= set(content_terms("AccuracySec="))
    assert {"listen", "stream"} <= set(content_terms("ListenStream="))
    # All-capitals names, their plurals and plain words stay whole.
    assert content_terms("SIGKILL URLs accuracy") == ["sigkill", "url", "accuracy"]


async def test_a_setting_named_in_camel_case_answers_a_question_in_words(generator):
    sources = [Source(1, "systemd.timer(5)", TIMER)]
    _, text = await answer(generator, "What accuracy does a systemd timer use by default?", sources)
    assert text.startswith("AccuracySec=: Defaults to 1min. [1]")


def test_a_chunk_cut_before_an_option_line_keeps_it_as_the_label():
    shown = [p.shown for p in source_passages(Source(1, "TRUNCATE(7)", TRUNCATE_CHUNK))]
    assert shown == [
        "RESTART IDENTITY: Automatically restart sequences owned by columns of the truncated table(s).",
        "CONTINUE IDENTITY: Do not change the values of sequences.",
        "CONTINUE IDENTITY: This is the default.",
        # Body text after the options is labelled by none of them.
        "The truncation is done in one transaction, so other sessions see all or none of it.",
    ]
    # A page's own first heading still labels nothing.
    assert [p.label for p in source_passages(Source(1, "fstab(5)", FSTAB))][0] == ""
    # capabilities(7) cut before a capability whose list of items is as deep as descriptions.
    caps = ("CAP_NET_BIND_SERVICE\n\t      Bind a socket to Internet domain privileged ports (port numbers less than "
            "1024).\n\n       CAP_NET_RAW\n\t      - Use RAW and PACKET sockets;\n\t      - bind to any address "
            "for transparent proxying.\n")
    assert [p.shown for p in source_passages(Source(1, "capabilities(7)", caps))][0] == (
        "CAP_NET_BIND_SERVICE: Bind a socket to Internet domain privileged ports (port numbers less than 1024).")


async def test_a_chunk_cut_before_an_option_line_answers_with_the_option(generator):
    sources = [Source(1, "TRUNCATE(7)", TRUNCATE_CHUNK)]
    _, text = await answer(generator, "How do I reset the sequences owned by a table's columns when truncating it?",
                           sources)
    assert "RESTART IDENTITY" in text.split(" [1]")[0]


# lsof(8) in short: a sentence about selecting network files, then the option that does it.
LSOF = """DESCRIPTION
       An open file may be a regular file, a directory, a library, a stream or a network file (Internet socket,
       NFS file or UNIX domain socket). Network files are selected by address.

OPTIONS
       -i [i]
              selects the listing of files any of whose Internet address matches the address specified in i.
"""
LSOF_OPTION = "-i [i]: selects the listing of files any of whose Internet address matches the address specified in i."


async def test_the_next_passage_on_topic_joins_the_answer(generator):
    # The best passage only says that network files can be selected; the next one, a little
    # below it, says how: an answer has room for both.
    _, text = await answer(generator, "How do I select Internet network files?", [Source(1, "lsof(8)", LSOF)])
    assert text.startswith("Network files are selected by address. [1]")
    assert f"{LSOF_OPTION} [1]" in text


async def test_the_passage_naming_what_the_question_asks_for_comes_first(generator):
    sources = [Source(1, "lsof(8)", LSOF.replace(
        "An open file may be a regular file, a directory, a library, a stream or a network file (Internet socket,\n"
        "       NFS file or UNIX domain socket). Network files are selected by address.",
        "lsof lists open files: regular files, directories, libraries and network files such as Internet sockets."))]
    _, text = await answer(generator, "Which option lists Internet network files?", sources)
    assert text.startswith(f"{LSOF_OPTION} [1]")


TUNE2FS = """DESCRIPTION
       tune2fs allows the system administrator to adjust various tunable filesystem parameters on Linux ext2
       filesystems.

OPTIONS
       -m reserved-blocks-percentage
              Set the percentage of the filesystem which may only be allocated by privileged processes.
"""


async def test_a_name_with_a_version_number_is_mentioned_by_its_family(generator):
    sources = [Source(1, "tune2fs(8)", TUNE2FS)]
    question = "How do I change the percentage of reserved blocks on an ext4 filesystem?"
    assert missing_names(question, sources) == []
    _, text = await answer(generator, question, sources)
    assert text.startswith("-m reserved-blocks-percentage: Set the percentage of the filesystem")
    # A family the sources never mention in any version is still missing.
    assert missing_names("How do I enable the jit in python3?", sources) == ["python3"]


NOLOGIN = """DESCRIPTION
       pam_nologin is a PAM module that prevents users from logging into the system when /var/run/nologin or
       /etc/nologin exists. The user is not root and /etc/nologin exists, so the user is not permitted to log in.
"""


async def test_a_hyphenated_prefix_is_not_a_name_the_sources_must_mention(generator):
    sources = [Source(1, "pam_nologin(8)", NOLOGIN)]
    question = "Which file, if present, makes pam_nologin refuse logins of non-root users?"
    assert missing_names(question, sources) == []
    _, text = await answer(generator, question, sources)
    assert "/etc/nologin" in text
    # The word after the prefix still has to be there: a non-kubernetes question is missing it.
    assert missing_names("How do I stop non-kubernetes pods?", sources) == ["non-kubernetes"]


HMAC_DRBG = """DESCRIPTION
       Support for the HMAC deterministic random bit generator through the EVP_RAND API.

   Identity
       "HMAC-DRBG" is the name for this implementation; it can be used with the EVP_RAND_fetch() function.

COPYRIGHT
       Copyright 2020-2021 The OpenSSL Project Authors. All Rights Reserved.

       Licensed under the Apache License 2.0 (the "License").
"""


async def test_a_word_that_makes_a_compound_of_a_name_is_not_a_name_the_sources_must_mention(generator):
    sources = [Source(1, "EVP_RAND-HMAC-DRBG(7ssl)", HMAC_DRBG)]
    question = "Through which OpenSSL API is the HMAC-based deterministic random bit generator offered?"
    assert missing_names(question, sources) == []
    _, text = await answer(generator, question, sources)
    assert text.startswith("DESCRIPTION: Support for the HMAC deterministic random bit generator through the "
                           "EVP_RAND API. [1]")
    # The name itself still has to be there.
    assert missing_names("Is there a Vault-based generator?", sources) == ["vault-based"]


async def test_a_copyright_notice_is_no_answer_unless_the_question_asks_about_it(generator):
    sources = [Source(1, "EVP_RAND-HMAC-DRBG(7ssl)", HMAC_DRBG)]
    _, text = await answer(generator, "Which OpenSSL API offers the HMAC deterministic random bit generator?",
                           sources)
    assert "EVP_RAND API" in text
    assert "Copyright" not in text and "Licensed" not in text
    _, notice = await answer(generator, "Who holds the copyright of the OpenSSL HMAC DRBG page?", sources)
    assert "Copyright 2020-2021 The OpenSSL Project Authors." in notice


# dpkg-reconfigure(8) as `man` renders it: descriptions indented with a tab.
DPKG_RECONFIGURE = (
    "DESCRIPTION\n"
    "       dpkg-reconfigure reconfigures packages after they have already been installed. Pass it the names of\n"
    "       a package or packages to reconfigure.\n\n"
    "       If you just want to see the current configuration of a package, see debconf-show(1) instead.\n\n"
    "OPTIONS\n"
    "       -ftype, --frontend=type\n"
    "\t   Select the frontend to use. The default frontend can be permanently changed by:\n\n"
    "\t    dpkg-reconfigure debconf\n\n"
    "\t   Note that if you normally have debconf set to use the noninteractive frontend, dpkg-reconfigure\n"
    "\t   will use the dialog frontend instead, so you actually get to reconfigure the package.\n\n"
    "       -pvalue, --priority=value\n"
    "\t   Specify the minimum priority of question that will be displayed.\n"
)


async def test_a_question_in_other_words_is_answered_when_a_passage_matches_it_strongly(generator, embedder):
    sources = [Source(1, "dpkg-reconfigure(8)", DPKG_RECONFIGURE)]
    question = "How do I pick which debconf user interface dpkg-reconfigure uses?"
    candidates = await score_passages(question, sources, embedder)
    # Most of its words are nowhere in the page ("pick", "user", "interface")...
    assert candidates.question_coverage < MIN_QUESTION_COVERAGE
    # ...but one passage says what it asks.
    assert max(c.score(Thresholds()) for c in candidates.items) >= STRONG_MATCH_SCORE
    _, text = await answer(generator, question, sources)
    assert "--frontend=type" in text


def test_few_of_the_questions_words_decline_only_a_weak_best_passage():
    strong = candidate(1, 0, "", "Select the frontend to use.", STRONG_MATCH_SCORE)
    weak = candidate(1, 0, "", "Select the frontend to use.", STRONG_MATCH_SCORE - 0.01)
    few_words = MIN_QUESTION_COVERAGE - 0.01
    assert choose(Candidates([strong], few_words, [])).found
    assert not choose(Candidates([weak], few_words, [])).found
    assert choose(Candidates([weak], MIN_QUESTION_COVERAGE, [])).found
    # A name the sources never mention declines whatever the score.
    assert not choose(Candidates([strong], 1.0, ["redis"])).found


def test_a_name_is_mentioned_by_its_plural_or_stem_but_not_by_a_few_of_its_letters():
    sources = [Source(1, "mkfs.minix(8)", "mkfs.minix creates a Linux MINIX filesystem. You configure the UID of "
                                          "its owner and the min number of inodes when you create it.")]
    # "UIDs" and "Configured" (a capital inside a sentence names something) are there, as a
    # plural and as a stem of 4 letters or more.
    assert missing_names("How are UIDs Configured on a MINIX filesystem?", sources) == []
    # "min" is in the text, but a 3-letter stem of "MinIO" is not a mention of it.
    assert missing_names("How do I create a bucket on a MinIO server?", sources) == ["minio"]


DIR_COLORS = """DESCRIPTION
       The program ls(1) uses the environment variable LS_COLORS to determine the colors in which the filenames
       are to be displayed.  This environment variable is usually set by a command like

\t      eval `dircolors some_path/dir_colors`

       found in a system default shell initialization file, like /etc/profile or /etc/csh.cshrc.

OPTIONS
       -a     Show all entries.
"""


def test_a_sentence_left_open_before_an_example_runs_into_it():
    shown = [p.shown for p in source_passages(Source(1, "dir_colors(5)", DIR_COLORS))]
    assert ("This environment variable is usually set by a command like eval `dircolors some_path/dir_colors`"
            in shown)
    # A heading over its paragraph, and a sentence that ends, stay as they were.
    assert not any(s.startswith("DESCRIPTION") for s in shown)
    assert ("The program ls(1) uses the environment variable LS_COLORS to determine the colors in which the "
            "filenames are to be displayed.") in shown


async def test_the_command_an_open_sentence_leads_to_answers_which_command(generator):
    _, text = await answer(generator, "Which command reads a dir_colors file to set LS_COLORS?",
                           [Source(1, "dir_colors(5)", DIR_COLORS)])
    assert "eval `dircolors some_path/dir_colors`" in text


# services(5)'s layout: prose that shares most of the question's words, and the file that
# answers it, named in FILES with a short description that shares few.
SERVICES = """DESCRIPTION
       services is a plain ASCII file providing a mapping between names for internet services and their port numbers.
       Every networking program should look into this file to get the port number for its service.
       The port numbers and names of network services are assigned by the IANA.
       A service name may map to one port number per protocol.
       Network programs look up the port number of a service by its name.
       The port number is written in decimal.
       Each line maps one service name to a port number and a protocol.
       Names of network services may have aliases, which map to the same port number.
       A network program may use ports below 1024.

FILES
       /etc/services
              The Internet network services list
"""


async def test_the_passage_naming_what_the_question_asks_for_is_among_those_compared_by_meaning(embedder):
    # Nine prose sentences, eight of which share more of the question's words than the FILES
    # entry; the encoder compares 8 passages only, and the one naming a file is among them
    # (without POOL_ASKED_KIND_BONUS it ranks 9th by terms and is never compared).
    sources = [Source(1, "services(5)", SERVICES)]
    question = "Which file maps network service names to port numbers?"
    candidates = await score_passages(question, sources, embedder)
    assert len(candidates.items) == MAX_EMBEDDED_PASSAGES < len(PassageScorer(question, sources).passages)
    [files_entry] = [c for c in candidates.items if c.passage.shown.startswith("/etc/services")]
    assert files_entry.passage.shown == "/etc/services: The Internet network services list"
    assert files_entry.names_asked_kind


def names_what_is_asked(question: str, text: str) -> bool:
    """Whether `text`, as one passage, names something of the kind `question` asks for."""
    [passage] = source_passages(Source(1, "page(5)", text))
    return names_asked_kind(passage, question)


def test_a_dotfile_is_a_path_and_the_end_of_a_dotted_setting_name_is_not():
    question = "Which file at the top of a repository lists its submodules?"
    assert names_what_is_asked(question, "The .gitmodules file is a text file in the top-level directory of the tree.")
    assert names_what_is_asked(question, "Credentials may be read from a file (.netrc) in the home directory.")
    assert names_what_is_asked(question, "Each user may override them in ~/.gitconfig at any time.")
    assert not names_what_is_asked(question, "The submodule.<name>.url setting is the URL to clone the submodule from.")


def test_a_number_written_in_words_is_what_how_many_asks_for():
    question = "How many fields does each line of /etc/subgid have?"
    assert names_what_is_asked(question, "This is specified with three fields delimited by colons.")
    assert names_what_is_asked(question, "Twelve entries at most are read from each line.")
    assert names_what_is_asked(question, "Each line holds up to 3 ranges.")
    # Words that only contain a number's letters, and prose naming none, are no number.
    assert not names_what_is_asked(question, "It is often written by the administrator, who pays attention to tenants.")
    assert not names_what_is_asked(question, "Each line in /etc/subgid contains a user name and a range of group ids.")


TC_QDISCS = """CLASSLESS QDISCS
       fq_codel
              Fair Queuing Controlled Delay is queuing discipline that combines Fair Queuing with the CoDel AQM scheme.
       pfifo_fast
              Standard qdisc for 'Advanced Router' enabled kernels. Consists of a three-band queue.
"""
FQ_CODEL = """DESCRIPTION
       FQ_Codel (Fair Queuing Controlled Delay) is queuing discipline that combines Fair Queuing with the CoDel AQM
       scheme. FQ_Codel uses a stochastic model to classify incoming packets into different flows.
"""


async def test_a_passage_another_document_states_too_cites_both(generator):
    question = "Which qdisc combines fair queueing with the CoDel AQM scheme?"
    sources = [Source(1, "tc(8)", TC_QDISCS), Source(2, "tc-fq_codel(8)", FQ_CODEL)]
    _, text = await answer(generator, question, sources)
    # One passage is shown (the other says the same), and both pages are cited for it.
    assert text.count("combines Fair Queuing with the CoDel AQM scheme") == 1
    assert re.search(r"combines Fair Queuing with the CoDel AQM scheme\. \[(1, 2|2, 1)\]", text)
    assert sorted(cited_numbers(text)) == [1, 2]
    # Two chunks of one document repeating it are one place: cited once.
    same_document = [Source(1, "tc(8)", TC_QDISCS), Source(2, "tc(8)", FQ_CODEL)]
    _, text = await answer(generator, question, same_document)
    assert "combines Fair Queuing with the CoDel AQM scheme" in text
    assert not re.search(r"\[\d+, \d+\]", text)


IP_NETNS = """COMMANDS
   ip netns add NAME - create a new named network namespace
       If NAME is available in /run/netns this command creates a new network namespace and assigns NAME to it.

   ip netns list - show all of the named network namespaces
       This command displays all of the network namespaces in /run/netns.

   ip [-all] netns exec [ NAME ] cmd ... - Run cmd in the named network namespace
       This command allows applications that are network namespace unaware to be run in something other than the
       default network namespace.
"""


def test_words_man_pages_abbreviate_are_the_words_spelled_out():
    assert content_terms("Run cmd with its env") == content_terms("run a command with its environment")


async def test_a_command_abbreviated_cmd_answers_a_question_that_spells_it_out(generator):
    _, text = await answer(generator, "How do I run a command inside a named network namespace?",
                           [Source(1, "ip-netns(8)", IP_NETNS)])
    assert text.startswith("ip [-all] netns exec [ NAME ] cmd ... - Run cmd in the named network namespace")


LOGIND_CONF = """OPTIONS
       HandlePowerKey=, HandleSuspendKey=, HandleLidSwitch=, HandleLidSwitchDocked=
           Controls how logind shall handle the system power and sleep keys and the lid switch to trigger
           actions such as system power-off or suspend. Can be one of "ignore", "poweroff", "suspend" and "lock".

       InhibitDelayMaxSec=
           Specifies the maximum time a system shutdown or sleep request is delayed due to an inhibitor lock.
"""


def test_the_words_framing_a_question_are_not_what_it_asks_about():
    assert content_terms("Which setting decides what happens to the lid?") == content_terms("Which setting: the lid?")


async def test_a_question_framed_in_words_the_page_never_uses_is_answered(generator):
    # "decides" and "happens" are nowhere in the page; "laptop" and "closed" are not either,
    # but "logind", "setting" and "lid" are what the question is about.
    sources = [Source(1, "logind.conf(5)", LOGIND_CONF)]
    _, text = await answer(generator, "Which logind setting decides what happens when the laptop lid is closed?", sources)
    assert text.startswith("HandlePowerKey=, HandleSuspendKey=, HandleLidSwitch=, HandleLidSwitchDocked=: Controls how")


HWCLOCK = """DESCRIPTION
       hwclock is an administration tool for the time clocks. It can: display the Hardware Clock time; set the
       Hardware Clock to a specified time; set the Hardware Clock from the System Clock; set the System Clock from
       the Hardware Clock; compensate for Hardware Clock drift; correct the System Clock timescale; set the
       kernel's timezone, NTP timescale, and epoch (Alpha only); and predict future Hardware Clock values based on
       its drift rate.

FUNCTIONS
       -s, --hctosys
           Set the System Clock from the Hardware Clock.

       -w, --systohc
           Set the Hardware Clock from the System Clock, and update the timestamps in /etc/adjtime.
"""


def test_an_inline_list_is_shown_by_the_items_the_question_is_about():
    [listing] = [p for p in source_passages(Source(1, "hwclock(8)", HWCLOCK)) if p.text.startswith("It can:")]
    focused = focused_on(listing, set(content_terms("How do I correct the timescale of the system clock?")))
    assert focused.text == "It can: … correct the System Clock timescale …"
    first = focused_on(listing, set(content_terms("Can it display the hardware clock time?")))
    assert first.text == "It can: display the Hardware Clock time …"
    # Neither prose without a lead-in nor code is a list; nor is one whose items all match.
    for text in ("The first part runs; then the second; then the third.",
                 "sa_family_t sun_family; /* AF_UNIX */ char sun_path[108]; /* Pathname */",
                 "Modes: fast clock; slow clock; no clock"):
        passage = replace(listing, text=text)
        assert focused_on(passage, set(content_terms("Which clock mode?"))) == passage


async def test_a_long_inline_list_leaves_room_for_the_option_it_leads_to(generator):
    # The list of what hwclock can do (381 characters) answered alone: the --systohc line,
    # nearly as good, did not fit beside it in MAX_ANSWER_CHARS.
    sources = [Source(1, "hwclock(8)", HWCLOCK)]
    _, text = await answer(generator, "How do I set the hardware clock from the current system time?", sources)
    assert "It can: … set the Hardware Clock to a specified time; set the Hardware Clock from the System Clock" in text
    assert "-w, --systohc: Set the Hardware Clock from the System Clock" in text
    assert "drift" not in text and len(text) <= MAX_ANSWER_CHARS + 10


# tipc(8)'s opening, as `man` renders it: the acronym is spelled out once, in the sentence
# that says what TIPC does; the next paragraph says more about TIPC, closer to "TIPC" alone.
TIPC = """DESCRIPTION
       The Transparent Inter-Process Communication (TIPC) protocol offers total address transparency between
       processes which allows applications in a clustered computer environment to communicate quickly and reliably
       with each other, regardless of their location within the cluster.

       TIPC originated at the telecommunications manufacturer Ericsson. The first open source version of TIPC was
       created in 2000 when Ericsson released its first Linux version of TIPC. TIPC was introduced in the mainline
       Linux kernel in 2006 and is now widely used both within and outside of Ericsson.
"""


def test_an_acronym_is_spelled_out_by_capitalised_words_with_its_letters_as_initials():
    def passage(text: str) -> Passage:
        return Passage(1, 0, "", text, False)

    spelled = passage("The Transparent Inter-Process Communication (TIPC) protocol offers address transparency.")
    assert spells_out_asked_acronym(spelled, "What does TIPC stand for?")
    assert spells_out_asked_acronym(passage("ARP stands for Address Resolution Protocol."), "What is ARP short for?")
    # Only when the question asks for what the letters stand for.
    assert not spells_out_asked_acronym(spelled, "What does TIPC offer?")
    # Not spelled out: the letters are there, but not as the initials of capitalised words in a row.
    assert not spells_out_asked_acronym(passage("TIPC originated at the telecommunications manufacturer Ericsson."),
                                        "What does TIPC stand for?")
    assert not spells_out_asked_acronym(passage("The transparent inter-process communication protocol."),
                                        "What does TIPC stand for?")
    assert not spells_out_asked_acronym(passage("Address Resolution (see RFC 826)."), "What does ARP stand for?")


async def test_what_an_acronym_stands_for_is_answered_by_the_sentence_spelling_it_out(generator):
    # "stand" frames the question: counted as a content word missing from the page, it made the
    # question look uncovered, and the answer was declined. The sentence spelling TIPC out is
    # further from the question by the encoder than the history of TIPC, and is still the answer.
    _, text = await answer(generator, "What does TIPC stand for?", [Source(1, "tipc(8)", TIPC)])
    assert text.startswith("The Transparent Inter-Process Communication (TIPC) protocol offers")
    assert cited_numbers(text) == [1]


# tc-cake(8) as `man` renders it: each description's first line indented with a tab, the next
# ones with spaces, so the sentence's rest sits left of its first line.
CAKE = (
    "FLOW ISOLATION PARAMETERS\n"
    "       dual-srchost\n"
    "\t    Flows are defined by the 5-tuple, and fairness is applied first over source addresses, then over\n"
    "       individual flows.  Good for use on egress traffic from a LAN to the internet,\n"
    "       where it'll prevent any one LAN host from monopolising the uplink, regardless of the number of flows\n"
    "       they use.\n"
    "\n"
    "       dual-dsthost\n"
    "\t    Flows are defined by the 5-tuple, and fairness is applied first over destination addresses, then\n"
    "       over individual flows.  Good for use on ingress traffic to a LAN from the internet,\n"
    "       where it'll prevent any one LAN host from monopolising the downlink, regardless of the number of\n"
    "       flows they use.\n"
    "\n"
    "       triple-isolate (default)\n"
    "\t    Flows are defined by the 5-tuple, and fairness is applied over source *and* destination addresses\n"
    "       intelligently, and also over individual flows.\n"
)


def test_a_sentence_wrapped_onto_a_less_indented_line_stays_whole_under_its_term():
    shown = [p.shown for p in source_passages(Source(1, "tc-cake(8)", CAKE))]
    assert ("dual-dsthost: Good for use on ingress traffic to a LAN from the internet, where it'll prevent any one "
            "LAN host from monopolising the downlink, regardless of the number of flows they use.") in shown
    assert not any(s.startswith("where") for s in shown)


def test_less_indented_lines_that_are_no_wrapped_sentence_start_a_block():
    # Code and tables keep their blocks: a short line, a line ending a sentence, tab-separated
    # cells, a capitalised line.
    for text in ("\t    if [ -x /usr/bin/foo ]; then run\n       fi\n",
                 "\t    This sentence is long enough to be prose and it ends here.\n       then a new block\n",
                 "\t    thresh\t6250Kbit\t100Mbit\t25Mbit and more cells of the table,\n       target 5ms\n",
                 "\t    This line is long enough to be prose and it stops mid-sentence,\n       Then a capital\n"):
        assert len(text_blocks(text)) == 2, text


async def test_the_term_a_wrapped_sentence_describes_answers_which_mode(generator):
    # Before, "where it'll prevent ... the downlink" was a block of its own: no label, a fragment
    # starting lowercase, and the answer named no mode (h13 of the second dev set).
    question = "Which cake flow isolation mode keeps one LAN host from monopolising the downlink?"
    _, text = await answer(generator, question, [Source(1, "tc-cake(8)", CAKE)])
    assert text.startswith("dual-dsthost: ")
    assert cited_numbers(text) == [1]


RESOLV_CONF = """OPTIONS
       timeout:n
              Sets the amount of time the resolver will wait for a response from a remote name server
              before retrying the query via a different name server.  This may not be the total time
              taken by any resolver API call and there is no guarantee that a single resolver API call
              maps to a single timeout.  Measured in seconds, the default is RES_TIMEOUT (currently 5,
              see <resolv.h>).  The value for this option is silently capped to 30.

       attempts:n
              Sets the number of times the resolver will send a query to its name servers before giving
              up and returning an error to the calling application.  The default is RES_DFLRETRY
              (currently 2, see <resolv.h>).  The value for this option is silently capped to 5.
"""


async def test_two_passages_about_one_term_show_its_label_once(generator):
    question = "How long does the resolver wait for a response before trying another name server?"
    pieces, text = await answer(generator, question, [Source(1, "resolv.conf(5)", RESOLV_CONF)])
    # Before, the second passage repeated it: "... [1] timeout:n: This may not be ...".
    assert pieces == [
        "timeout:n: Sets the amount of time the resolver will wait for a response from a remote name server "
        "before retrying the query via a different name server. [1]",
        " This may not be the total time taken by any resolver API call and there is no guarantee that a "
        "single resolver API call maps to a single timeout. [1]",
    ]


def candidate(source_number: int, position: int, label: str, text: str, cosine: float) -> Candidate:
    vector = [0.0] * 8
    vector[position] = 1.0  # no two alike: none is dropped as a repeat of another
    return Candidate(Passage(source_number, position, label, text, False), cosine, 0.0, vector, False)


def test_a_passage_about_a_term_already_shown_follows_it_without_its_label():
    timeout_unit = candidate(1, 0, "timeout:n", "Measured in seconds.", 0.9)
    attempts = candidate(1, 1, "attempts:n", "Sets the number of tries.", 0.85)
    timeout = candidate(1, 2, "timeout:n", "Sets the time to wait.", 0.8)
    # The same term on another page is another page's statement: labelled, in score order.
    other_page = candidate(2, 3, "timeout:n", "Waits for the server.", 0.75)
    selection = choose(Candidates([attempts, timeout, other_page, timeout_unit], 1.0, []), limit=4)
    assert selection.shown() == ["timeout:n: Measured in seconds.", "Sets the time to wait.",
                                 "attempts:n: Sets the number of tries.", "timeout:n: Waits for the server."]
    assert [selection.citations(i) for i in range(4)] == [(1,), (1,), (1,), (2,)]


DDP = """DESCRIPTION
       Linux implements the AppleTalk protocols described in Inside AppleTalk.
       Only the DDP layer and AARP are present in the kernel.  They are designed
       to be used via the netatalk protocol libraries.  This page documents the
       interface for those who wish or need to use the DDP layer directly.

       The communication between AppleTalk and the user program works using a
       BSD-compatible socket interface.  For more information on sockets, see
       socket(7).
"""


async def test_the_sentence_after_the_best_one_in_its_paragraph_follows_it(generator):
    question = "Which parts of the AppleTalk protocols does the Linux kernel implement?"
    pieces, _ = await answer(generator, question, [Source(1, "ddp(7)", DDP)])
    # Before, the answer stopped at the first sentence, which only leads to the fact.
    assert pieces == ["Linux implements the AppleTalk protocols described in Inside AppleTalk. [1]",
                      " Only the DDP layer and AARP are present in the kernel. [1]"]


def test_next_sentences_stay_in_their_paragraph():
    passages = source_passages(Source(1, "ddp(7)", DDP))
    following = {passage.text: next_sentences(passages).get(passage.position) for passage in passages}
    assert following["Only the DDP layer and AARP are present in the kernel."].text.startswith("They are designed")
    # A paragraph's last sentence is followed by nothing (the next paragraph is another block).
    last_of_paragraph = "This page documents the interface for those who wish or need to use the DDP layer directly."
    assert following[last_of_paragraph] is None
    assert following["For more information on sockets, see socket(7)."] is None


def test_the_next_sentence_joins_only_when_it_is_whole_and_fits():
    best = candidate(1, 0, "", "Linux implements the AppleTalk protocols.", 0.9)
    after = Passage(1, 1, "", "Only the DDP layer and AARP are present in the kernel.", False)
    assert choose(Candidates([best], 1.0, [], {}, {0: after})).shown() == [best.passage.text, after.text]
    cut_short = replace(after, fragment=True)  # the chunk ends inside it
    assert choose(Candidates([best], 1.0, [], {}, {0: cut_short})).shown() == [best.passage.text]
    too_long = replace(after, text="x" * (MAX_ANSWER_CHARS - len(best.passage.text) + 1))
    assert choose(Candidates([best], 1.0, [], {}, {0: too_long})).shown() == [best.passage.text]
