#!/usr/bin/env bash
# Regenerates the default prompt library of hotline:
#   prompts/en/<name>.wav, prompts/zh/<name>.wav  speech (espeak-ng)
#   prompts/moh/default.wav                       music on hold (sox synth)
# Every file is 8000 Hz, 16-bit signed PCM, mono: what the prompt cache loads.
#
# Requirements: bash, espeak-ng (>= 1.50, with the cmn dictionary) and sox (>= 14.4).
#   Debian/Ubuntu: apt-get install -y espeak-ng sox
# Runs from any directory; rerunning rewrites the same files (no dither, no
# randomness), so an unchanged text gives a byte-identical WAV.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

for tool in espeak-ng sox; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "generate.sh: $tool is not installed (apt-get install -y espeak-ng sox)" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# sox: -D no dither, -R repeatable; quiet apart from errors.
SOX=(sox -D -R -V1)
RATE=8000

# Mandarin. espeak-ng 1.51 (Debian 12, Ubuntu 22.04/24.04) has a bug in the
# `cmn` voice: it looks characters up as pinyin, then reads that pinyin as
# English ("好" -> "hao two"; espeak-ng issues #1236, #1370, fixed in 1.52).
# `cmn-latn-pinyin` is the same Mandarin voice and dictionary without the bug,
# so it is used whenever `cmn` shows the problem.
zh_voice=cmn
if espeak-ng -v cmn -q -x "好" 2>/dev/null | grep -q '(en)'; then
    zh_voice=cmn-latn-pinyin
fi

# speak LANG NAME TEXT: synthesise, convert to 8 kHz mono 16-bit, trim the
# silence at both ends, put back exactly 100 ms each side, peak at -3 dBFS.
speak() {
    local lang="$1" name="$2" text="$3" voice speed
    case "$lang" in
        en) voice=en-us speed=150 ;;
        zh) voice="$zh_voice" speed=140 ;;
        *) echo "generate.sh: unknown language $lang" >&2; exit 1 ;;
    esac
    mkdir -p "$lang"
    espeak-ng -v "$voice" -s "$speed" -w "$work/raw.wav" -- "$text"
    "${SOX[@]}" "$work/raw.wav" -r "$RATE" -b 16 -e signed-integer -c 1 "$lang/$name.wav" \
        highpass 100 \
        silence 1 0.01 -45d reverse silence 1 0.01 -45d reverse \
        rate -v "$RATE" \
        gain -n -3 \
        pad 0.1 0.1
}

# name | English | Mandarin
prompts=(
    "greeting|Welcome to the hotline.|欢迎致电服务热线。"
    "menu|For sales, press 1. For support, press 2. For your account balance, press 9. To speak to an agent, press 0.|销售请按一，技术支持请按二，查询账户余额请按九，人工服务请按零。"
    "invalid|Sorry, that is not a valid choice.|对不起，您的选择无效。"
    "please_hold|Please hold, your call is important to us.|请稍候，您的来电对我们非常重要。"
    "thank_you_for_waiting|Thank you for waiting. An agent will be with you shortly.|感谢您的耐心等待，客服人员将很快为您服务。"
    "position|Your position in the queue is|您在队列中的位置是"
    "estimated_wait|The estimated waiting time is|预计等待时间是"
    "minutes|minutes|分钟"
    "digit_0|zero|零"
    "digit_1|one|一"
    "digit_2|two|二"
    "digit_3|three|三"
    "digit_4|four|四"
    "digit_5|five|五"
    "digit_6|six|六"
    "digit_7|seven|七"
    "digit_8|eight|八"
    "digit_9|nine|九"
    "goodbye|Thank you for calling. Goodbye.|感谢您的来电，再见。"
    "after_hours|Our office is closed. Our opening hours are eight a.m. to eight p.m., Monday to Friday.|我们现在已经下班。我们的营业时间是周一至周五，上午八点至晚上八点。"
    "leave_number|To leave your number and be called back, press 1.|如需留下您的号码等候回电，请按一。"
    "callback_recorded|Thank you. We will call you back.|谢谢。我们会给您回电。"
    "survey|Please rate our service from 1 to 5, where 5 is excellent.|请对我们的服务进行评分，从一分到五分，五分表示非常满意。"
    "enter_account|Please enter your account number, followed by the hash key.|请输入您的账号，并以井号键结束。"
    "enter_pin|Please enter your PIN, followed by the hash key.|请输入您的密码，并以井号键结束。"
    "balance_is|Your balance is|您的余额是"
    "point|point|点"
    "agent_number|Agent number|工号"
    "will_serve_you|will serve you.|将为您服务。"
    "busy|All our agents are busy. Please call again later.|所有客服人员都在忙，请稍后再拨。"
    "blocked|This number cannot be served.|对不起，无法为此号码提供服务。"
    "lookup_failed|Sorry, we cannot reach your account data right now.|对不起，目前无法查询您的账户信息。"
    "callback_confirm|We will call you back at|我们将回电至"
    "callback_confirm_keys|To confirm, press the hash key. To give another number, key it in, followed by the hash key.|确认请按井号键。如需更换号码，请输入新号码，并以井号键结束。"
    "callback_number_refused|We cannot call this number back. Please key in another number, followed by the hash key.|对不起，我们无法回电至此号码。请输入其他号码，并以井号键结束。"
)

for entry in "${prompts[@]}"; do
    IFS='|' read -r name en zh <<<"$entry"
    speak en "$name" "$en"
    speak zh "$name" "$zh"
done

# Music on hold: a gentle I-vi-IV-V / I-iii-IV-V progression in C major, 4 s
# a chord, 32 s in all. Each chord is a soft sine pad (slow attack, long
# release) under an arpeggio of plucked notes. Chords overlap by their release;
# the release of the last chord is folded onto the start of the first, so the
# file loops with no seam. Synthesised at 32 kHz (no aliasing of the plucks'
# harmonics), mellowed by a low-pass, then resampled to 8 kHz. Notes are semitones from A4 (440 Hz), sox's %n.
moh() {
    local chord_len=4 tail=1.5 syn_rate=32000
    local seg_len seg i=0 offset
    seg_len="$(awk -v a="$chord_len" -v b="$tail" 'BEGIN { print a + b }')"
    # bass pad1 pad2 | eight arpeggio notes
    local chords=(
        "-21 -9 -5 | -9 -2 3 7 3 -2 -5 -2"   # C
        "-24 -12 -9 | -12 -5 0 3 0 -5 -9 -5" # Am
        "-28 -16 -12 | -16 -9 -4 0 -4 -9 -12 -9" # F
        "-26 -14 -10 | -14 -7 -2 2 -2 -7 -10 -7" # G
        "-21 -9 -5 | -9 -5 -2 3 -2 -5 -9 -5" # C
        "-17 -5 -2 | -5 2 7 10 7 2 -2 2"     # Em
        "-28 -16 -12 | -16 -12 -9 -4 -9 -12 -16 -12" # F
        "-26 -14 -10 | -14 -10 -7 -2 2 -2 -7 -10" # G
    )
    local mix_inputs=()
    for chord in "${chords[@]}"; do
        local pad="${chord%%|*}" arp="${chord#*|}"
        local synth=() delays=() t=0 n
        for n in $pad; do synth+=(sine "%$n"); done
        # sox's `synth` makes one channel per tone; mix them down, envelope, level.
        "${SOX[@]}" -n -r "$syn_rate" -b 16 -c 1 "$work/pad$i.wav" \
            synth "$seg_len" "${synth[@]}" remix - \
            fade q 1.0 "$seg_len" "$tail" gain -n -14
        synth=()
        for n in $arp; do
            synth+=(pluck "%$n")
            delays+=("$t")
            t="$(awk -v t="$t" 'BEGIN { print t + 0.5 }')"
        done
        "${SOX[@]}" -n -r "$syn_rate" -b 16 -c 1 "$work/arp$i.wav" \
            synth "$seg_len" "${synth[@]}" delay "${delays[@]}" remix - \
            lowpass 1800 lowpass 1800 trim 0 "$seg_len" fade q 0.005 "$seg_len" "$tail" gain -n -9
        offset="$(awk -v i="$i" -v l="$chord_len" 'BEGIN { print i * l }')"
        seg="$work/seg$i.wav"
        "${SOX[@]}" -m -v 1 "$work/pad$i.wav" -v 1 "$work/arp$i.wav" -b 16 "$seg" pad "$offset"
        mix_inputs+=(-v 1 "$seg")
        i=$((i + 1))
    done
    local total
    total="$(awk -v i="$i" -v l="$chord_len" 'BEGIN { print i * l }')"
    # Resample before cutting, so the cut (and the loop point) is sample-exact.
    "${SOX[@]}" -m "${mix_inputs[@]}" -e floating-point -b 32 -r "$RATE" "$work/full.wav" \
        rate -v "$RATE"
    "${SOX[@]}" "$work/full.wav" "$work/body.wav" trim 0 "$total"
    "${SOX[@]}" "$work/full.wav" "$work/wrap.wav" trim "$total"
    mkdir -p moh
    "${SOX[@]}" -m -v 1 "$work/body.wav" -v 1 "$work/wrap.wav" \
        -r "$RATE" -b 16 -e signed-integer -c 1 moh/default.wav \
        trim 0 "$total" gain -n -6
}
moh

echo "generate.sh: wrote $(find en zh moh -name '*.wav' | wc -l) files (Mandarin voice: $zh_voice)"
