"""Subtitle lines written for the tests, by language tag and the code page its files come in.

The East Asian ones use the standard codecs (GB2312, Big5, Shift_JIS,
EUC-KR), which the Windows supersets that the reader uses must read alike.
"""

LEGACY_SUBTITLES = {
    ("hr", "cp1250"): [
        "Đino, dođavola, gdje si bio cijelu noć?", "Čekali smo te satima ispred kuće.",
        "Žao mi je, nisam htio da se brinete.", "Šutnja nije odgovor, moraš nam reći istinu.",
    ],
    ("cs", "iso8859_2"): [
        "Řekl jsem ti, že se vrátím před půlnocí.", "Ještě jsme nedojedli večeři, pojď ke stolu.",
        "Šťastnou cestu a dej vědět, až dorazíš.",
    ],
    ("hu", "cp1250"): ["Hol voltál egész éjjel? Vártunk rád.", "Bocsánat, nem akartam, hogy aggódjatok.", "Ő nem jön, túl fáradt."],
    ("ru", "cp1251"): [
        "Где ты был всю ночь? Мы тебя ждали.", "Извини, я не хотел, чтобы вы волновались.",
        "Молчание — это не ответ, скажи нам правду.",
    ],
    ("ru", "koi8_r"): ["Завтра утром мы уезжаем на вокзал.", "Ты взял билеты и паспорта?", "Конечно, они лежат в моём рюкзаке."],
    ("el", "cp1253"): [
        "Πού ήσουν όλη τη νύχτα; Σε περιμέναμε.", "Συγγνώμη, δεν ήθελα να ανησυχήσετε.",
        "Η σιωπή δεν είναι απάντηση, πες μας την αλήθεια.",
    ],
    ("tr", "cp1254"): [
        "Bütün gece neredeydin? Seni bekledik.", "Özür dilerim, endişelenmenizi istemedim.",
        "Sessizlik bir cevap değil, bize gerçeği söyle.",
    ],
    ("lt", "cp1257"): [
        "Kur buvai visą naktį? Mes tavęs laukėme.", "Atsiprašau, nenorėjau, kad jaudintumėtės.",
        "Tyla nėra atsakymas, pasakyk mums tiesą.",
    ],
    ("lv", "cp1257"): [
        "Kur tu biji visu nakti? Mēs tevi gaidījām.", "Piedod, es negribēju, lai jūs uztraucaties.",
        "Klusēšana nav atbilde, pasaki mums patiesību.",
    ],
    ("he", "cp1255"): ["איפה היית כל הלילה? חיכינו לך.", "סליחה, לא רציתי שתדאגו.", "שתיקה היא לא תשובה, תגיד לנו את האמת."],
    ("ar", "cp1256"): ["أين كنت طوال الليل؟ كنا ننتظرك.", "آسف، لم أرد أن تقلقوا.", "الصمت ليس جوابا، قل لنا الحقيقة."],
    ("zh", "gb2312"): ["你昨晚去哪儿了？我们一直在等你。", "对不起，我不想让你们担心。", "沉默不是答案，告诉我们真相。"],
    ("zh-TW", "big5"): ["你昨晚去哪裡了？我們一直在等你。", "對不起，我不想讓你們擔心。", "沉默不是答案，告訴我們真相。"],
    ("ja", "shift_jis"): ["昨夜はどこにいたの？ずっと待っていたよ。", "ごめん、心配させたくなかったんだ。", "黙っていても答えにならない、本当のことを言って。"],
    ("ko", "euc_kr"): ["어젯밤에 어디 있었어? 우리 계속 기다렸어.", "미안해, 걱정시키고 싶지 않았어.", "침묵은 대답이 아니야, 진실을 말해 줘."],
}
