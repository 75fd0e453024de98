using System.Globalization;
using System.Text;

namespace Microsoft.ML.ModelMerging.Data;

/// <summary>
/// The characters of the pre-training corpus: a vocabulary the benchmark does not use, so that the pre-trained
/// model is a generic starting point and not already an expert of any task.
/// <para>
/// Rules, in order. (1) No character of any benchmark task: digits 0–9, letters A–J and a–j, and the symbols
/// + = % &amp; @ # ? $ § !. (2) No Latin letter or digit at all, nor any shape commonly confused with one: Greek Α Β Ε Ο,
/// Cyrillic А В С О Р, Armenian Օ Ս Տ, Hebrew ו ן ס, ∅ ∈ ∀ and the like are out (see <see cref="ExcludedLookAlikes"/>),
/// which is why Armenian and most of Georgian are absent, and why a Greek letter such as ξ (§ in URW Bookman) or Ξ
/// (≡, close to "=") is left out. (3) No two characters that look alike once scaled to fit the image: glyphs are
/// normalised to their outline box, so ▪ and ■, П and Π, or ☀ and ☼ would be one class under two labels; one of
/// each pair is kept. (4) Every character is drawn by at least <see cref="MinimumFonts"/> of the installed fonts, so a
/// class is never the style of a single font. The lists were checked by rendering every candidate from the Debian
/// font packages build.sh installs.
/// </para>
/// </summary>
public static class PretrainingVocabulary
{
    /// <summary>Each character must be covered by at least this many font files (the dingbats and chess pieces come from DejaVu and FreeFont: 11 files).</summary>
    public const int MinimumFonts = 8;

    /// <summary>The characters, grouped by where they come from.</summary>
    public static readonly IReadOnlyList<(string Group, string Characters)> Groups =
    [
        ("Greek capitals", "ΓΔΠΦΨΩ"),
        ("Greek small letters", "ζλπσφψ"),
        ("Cyrillic capitals", "ДЖИЛЦШЩЯЏѪ"),
        ("Georgian letters", "დთლრღ"),
        ("Hebrew letters", "אבגהמת"),
        ("Arrows", "←↑→↓↔↕↖↗↘↙↨↵⇄⇆⇐⇑⇒⇓⇔⇕↺↻↩↪⇦⇧⇨⇩"),
        ("Mathematical operators", "∇∠∴∷≤≥⊢⊣⊥⌂⌐¬"),
        ("Geometric shapes", "■□▬▲►▼◄◊●◘◆▣▤▥▦◢◣◤◥◧◨"),
        ("Technical symbols", "⌘⌥⌨⏏"),
        ("Miscellaneous symbols", "☺☻☹☼♀♂☿♁♠♣♥♡♤♧♫♬♌♎♐"),
        ("Dingbats", "✓✈✂✉☎☂☁☯☢☣⚓⚙⚛⚡✌✍✏"),
        ("Chess pieces", "♔♕♖♗♘♙♚♛♜♝♞♟"),
        ("Dice", "⚀⚁⚂⚃⚄⚅"),
        ("Currency and signs", "£¤¶₪"),
        ("Brackets and strokes", "()[]{}<>/\\~«»"),
    ];

    /// <summary>
    /// Shapes deliberately left out because they are, or are easily taken for, a benchmark character or a Latin
    /// letter or digit, grouped by what they resemble. Kept as data so a test can prove the vocabulary avoids them.
    /// </summary>
    public static readonly IReadOnlyList<(string LooksLike, string Characters)> ExcludedLookAlikes =
    [
        ("0 O o", "OoΟοОоՕօ○◯°∘◦ΘθϴѲѳӨөØø∅⊘⊖⊙☮ס"),
        ("1 I l i", "lIΙІӀӏ|ǀ∣¦‖Ⅰⅰıιі¡וןזי"),
        ("2", "ƧƻՁՉՋ"),
        ("3", "ЗзƷʒӠӡЭэЄєεϵɛƐ∈∊∋ՅვკპჰѮ"),
        ("4", "Чч♃ԿՎ"),
        ("5", "Ƽƽ"),
        ("6", "бδ∂ნწ"),
        ("7", "דרךԴՂ"),
        ("8", "ȣȢ∞გზ"),
        ("9", "ϑգցფშףפ"),
        ("digits in other forms", "¹²³¼½¾①②③⁰"),
        ("A", "ΑАΛ∀∧Ѧѧ^"),
        ("B b", "ΒВвβϐßЪъЬьЫыБƀɓþÞ♭ბხ"),
        ("C c", "СсϹϲςϛ¢©€⊂⊆⊃ↄɔცכ"),
        ("D d", "ÐðĐđԁძ"),
        ("E e", "ΕЕЁёЄΣ∑∃Ξ℮əӘәеЭ"),
        ("F f", "ϜҒғ₣Ւƒſʃ∫⌠₹"),
        ("G g", "ԌɡɢǥՇ"),
        ("H h", "ΗНнҢңħĦһҺћЋђЂℎℏ♅Իჩ"),
        ("J j", "ЈјϳȷʝՅ♩♪⌡ქ"),
        ("a", "аα∝ɑɐ"),
        ("Latin letters beyond J", "ΚΜΝΡΤΥΧΖкмнрстхуУҮѴѵΰυνκχρημτωო⊻✗¥"),
        ("Latin letters and digits in ligatures", "ЉЊЮѬ"),
        ("+ and ×", "✚⊕±∓∔†÷×✕⊗"),
        ("=", "≡≈≠≅≃♒≣"),
        ("%", "‰‱℅"),
        ("&", "⅋ჯ"),
        ("@", "Ҩⓐ"),
        ("#", "♯⌗⋕"),
        ("?", "¿ʔ‽"),
        ("$", "₴"),
        ("§", "ξ"),
        ("!", "ǃ‼⚠"),
        ("near-duplicates of kept characters", "ПГФЙй∏▪▫◇♦☀√Ѱ∆▵▿"),
    ];

    /// <summary>All characters, in a fixed order: the class index of each is its position.</summary>
    public static IReadOnlyList<string> Characters { get; } = Groups.SelectMany(group => Split(group.Characters)).ToArray();

    /// <summary>Every look-alike of <see cref="ExcludedLookAlikes"/> as one list.</summary>
    public static IReadOnlyList<string> LookAlikes { get; } = ExcludedLookAlikes.SelectMany(group => Split(group.Characters)).Distinct().ToArray();

    /// <summary>Class name of a character: the character and its code point, readable in reports even without the font.</summary>
    public static string ClassName(string character) =>
        $"{character} U+{Rune.GetRuneAt(character, 0).Value.ToString("X4", CultureInfo.InvariantCulture)}";

    internal static IEnumerable<string> Split(string characters) => characters.EnumerateRunes().Select(rune => rune.ToString());
}
