"""The story generator's name statistics, held-out pairs and the positions the induction metric scores."""

import statistics

from multitoken.experiments import stories as s


def test_vocabulary_syllables_and_names_are_disjoint():
    words = set(s.vocabulary())
    assert len(s.S1) == len(set(s.S1)) == 48 and len(s.S2) == len(set(s.S2)) == 48 and len(s.COMMON_NAMES) == 40
    assert not set(s.S1) & set(s.S2)
    plain = words - set(s.S1) - set(s.S2) - set(s.COMMON_NAMES)
    assert not plain & (set(s.S1) | set(s.S2) | set(s.COMMON_NAMES)) and 300 <= len(words) <= 450


def test_held_out_pairs_never_appear_in_training():
    held = s.held_out_pairs()
    assert len(held) == round(0.2 * 48 * 48)
    for story in s.training_stories(seed=0, count=400, p_fresh=1.0):
        for i in story.first_s2 + story.repeat_s2:
            assert (story.words[i - 1], story.words[i]) not in held
    for story in s.test_stories(seed=1, count=100):
        for i in story.first_s2 + story.repeat_s2:
            assert (story.words[i - 1], story.words[i]) in held


def test_name_statistics_follow_the_pressure_knob():
    def fresh_share(p):
        stories = s.training_stories(seed=3, count=500, p_fresh=p)
        fresh = sum(len(st.first_s2) for st in stories)
        characters = sum(len(st.first_s2) + len({w for w in st.words if w in s.COMMON_NAMES}) for st in stories)
        return fresh / characters

    assert 0.02 < fresh_share(0.05) < 0.09
    assert fresh_share(1.0) == 1.0


def test_each_story_keeps_names_apart_and_mentions_them_2_to_6_times():
    for story in s.test_stories(seed=4, count=300):
        firsts = [(story.words[i - 1], story.words[i]) for i in story.first_s2]
        assert 2 <= len(firsts) <= 3
        assert len({a for a, _ in firsts}) == len(firsts) and len({b for _, b in firsts}) == len(firsts)
        mentions = {name: 0 for name in firsts}
        for i in story.first_s2 + story.repeat_s2:
            mentions[(story.words[i - 1], story.words[i])] += 1
        assert all(2 <= m <= 6 for m in mentions.values())
        assert all(i > min(story.first_s2) for i in story.repeat_s2)  # a repeat comes after some first mention
    lengths = [len(st.words) for st in s.training_stories(seed=5, count=500, p_fresh=0.05)]
    assert 60 <= statistics.mean(lengths) <= 200


def test_copy_control_repeats_its_first_half():
    for seq in s.copy_sequences(seed=6, count=5, length=10):
        assert seq[:10] == seq[10:] and not set(seq) & (set(s.S1) | set(s.S2))
