"""MovieLens 100K / 1M / 25M parsers on small files in the exact GroupLens formats."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from distrec.data.schema import TEST, TRAIN

# user, item, rating, unix time: u.data's columns. Rows 2 and 4 form the u1 test fold.
U_DATA = [
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (196, 377, 5, 881250950),
    (244, 51, 2, 880606923),
]
U1_TEST = [2, 4]
GENRE_FLAGS = {  # unknown Action Adventure Animation Children's Comedy ... (19 flags, u.item's order)
    242: "0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0",  # Comedy
    302: "0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0",  # Crime Film-Noir Mystery Thriller
    377: "0|0|0|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",  # Children's Comedy
    51: "0|1|0|0|0|0|0|0|1|0|0|0|0|0|1|0|0|1|1",  # Action Drama Romance War Western
    999: "1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",  # never rated: dropped from items.parquet
}
U_ITEM = [
    "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|" + GENRE_FLAGS[242],
    "302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?L%2EA%2E+Confidential+(1997)|" + GENRE_FLAGS[302],
    "377|Heavyweights (1994)|01-Jan-1994||http://us.imdb.com/M/title-exact?Heavyweights%20(1994)|" + GENRE_FLAGS[377],
    "51|Légendes d'automne|01-Jan-1994||http://us.imdb.com/M/title-exact?Legends%20of%20the%20Fall|" + GENRE_FLAGS[51],
    "999|Unrated (1990)|01-Jan-1990|||" + GENRE_FLAGS[999],
]
U_USER = ["196|49|M|writer|55105", "186|39|F|executive|00000", "22|25|M|writer|40206", "244|28|M|technician|80525"]


def _tab(rows) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def write_ml100k(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text(_tab(U_DATA))
    (root / "u1.test").write_text(_tab(U_DATA[i] for i in U1_TEST))
    (root / "u1.base").write_text(_tab(r for i, r in enumerate(U_DATA) if i not in U1_TEST))
    (root / "u.item").write_bytes("\n".join(U_ITEM).encode("latin-1") + b"\n")
    (root / "u.user").write_text("\n".join(U_USER) + "\n")
    return root


def zip_dir(directory: Path, archive: Path, prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(directory.iterdir()):
            z.write(path, f"{prefix}/{path.name}")
    return archive


def check_ml100k(got) -> None:
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (4, 4, 5)
    assert got.users == [196, 186, 22, 244]  # dense index = order of first appearance
    assert got.items == [242, 302, 377, 51]
    assert got.column("user") == [0, 1, 2, 0, 3]
    assert got.column("item") == [0, 1, 2, 2, 3]
    assert got.column("rating") == [3.0, 3.0, 1.0, 5.0, 2.0]
    assert got.column("ts") == [r[3] for r in U_DATA]
    assert got.column("split_u1") == [TRAIN, TRAIN, TEST, TRAIN, TEST]
    assert got.summary["splits"]["u1"]["counts"] == {"train": 3, "val": 0, "test": 2, "dropped": 0}


def test_ml100k_u_data_with_u1_split_and_metadata(tmp_path, prepare):
    got = prepare("ml-100k", write_ml100k(tmp_path / "ml-100k"), splits=["u1"])
    check_ml100k(got)
    items = got.table("items.parquet").to_pydict()
    assert items["item"] == [0, 1, 2, 3] and items["raw"] == [242, 302, 377, 51]
    assert items["title"] == ["Kolya", "L.A. Confidential", "Heavyweights", "Légendes d'automne"]
    assert items["year"] == [1996, 1997, 1994, 1994]  # the last from its release date
    assert items["genres"][1] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items["genres"][3] == ["Action", "Drama", "Romance", "War", "Western"]
    assert got.summary["items_with_metadata"] == 4 and got.summary["has_users"]
    users = got.table("users.parquet").to_pydict()
    assert users["raw"] == [196, 186, 22, 244] and users["zip_code"][1] == "00000"


def test_ml100k_from_the_official_zip_layout(tmp_path, prepare):
    archive = zip_dir(write_ml100k(tmp_path / "files"), tmp_path / "ml-100k.zip", "ml-100k")
    check_ml100k(prepare("ml-100k", archive, splits=["u1"]))


def test_ml100k_atomic_item_and_user_files(tmp_path, prepare):
    root = tmp_path / "atomic"
    root.mkdir()
    (root / "u.data").write_text(_tab(U_DATA))
    (root / "items.tsv").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
        "377\tHeavyweights\t\tChildren's Comedy\n"
    )
    (root / "users.tsv").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n196\t49\tM\twriter\t55105\n"
    )
    got = prepare("ml-100k", root, splits=["random"])
    items = got.table("items.parquet").to_pydict()
    assert items["raw"] == [242, 302, 377]
    assert items["year"] == [1996, 1997, None]
    assert items["genres"][2] == ["Children's", "Comedy"]
    assert got.summary["items_without_metadata"] == 1
    assert got.table("users.parquet").to_pydict()["occupation"] == ["writer"]


def test_ml100k_rating_missing_from_both_fold_files(tmp_path, fails):
    root = write_ml100k(tmp_path / "ml-100k")
    (root / "u1.base").write_text(_tab(U_DATA[:1]))
    message = fails("ml-100k", root, splits=["u1"])
    assert message == f"{root}/u.data, line 2: rating is in neither u1.base nor u1.test"


def test_ml100k_fold_pair_missing_from_u_data(tmp_path, fails):
    root = write_ml100k(tmp_path / "ml-100k")
    (root / "u1.test").write_text(_tab([U_DATA[i] for i in U1_TEST] + [(9, 9, 4, 881250951)]))
    assert fails("ml-100k", root, splits=["u1"]) == (
        f"{root}/u1.test, line 3: user 9, item 9 is not in u.data; u1.base and u1.test must partition u.data's ratings"
    )


def test_ml100k_fold_files_that_share_a_pair(tmp_path, fails):
    root = write_ml100k(tmp_path / "ml-100k")
    (root / "u1.test").write_text(_tab([U_DATA[1], U_DATA[4]]))  # U_DATA[1] is also u1.base's line 2
    (root / "u1.base").write_text(_tab([U_DATA[0], U_DATA[1], U_DATA[3]]))
    assert fails("ml-100k", root, splits=["u1"]) == (
        f"{root}/u1.test, line 1: user 186, item 302 is also in {root}/u1.base, line 2; "
        "u1.base and u1.test must not share a rating"
    )


def test_ml100k_fold_file_listing_a_pair_twice(tmp_path, fails):
    root = write_ml100k(tmp_path / "ml-100k")
    (root / "u1.test").write_text(_tab([U_DATA[2], U_DATA[4], U_DATA[2]]))
    assert (
        fails("ml-100k", root, splits=["u1"])
        == f"{root}/u1.test, line 3: user 22, item 377 is listed again (first at {root}/u1.test, line 1)"
    )


@pytest.mark.parametrize("policy,rating", [("keep-last", 3.0), ("mean", 2.0)])
def test_ml100k_repeated_pair_resolved_as_asked(tmp_path, prepare, fails, policy, rating):
    """u.data (and so u1.base) rates user 196's item 242 twice: refused unless --duplicates says how."""
    root = write_ml100k(tmp_path / "ml-100k")
    again = (196, 242, 5, 881250960)
    (root / "u.data").write_text(_tab(U_DATA + [again]))
    (root / "u1.base").write_text(_tab([r for i, r in enumerate(U_DATA) if i not in U1_TEST] + [again]))
    assert fails("ml-100k", root, splits=["u1"]).startswith(f"{root}/u1.base, line 4: user 196, item 242 is listed again")
    (root / "u1.base").write_text(_tab(r for i, r in enumerate(U_DATA) if i not in U1_TEST))  # the pair once
    assert fails("ml-100k", root, splits=["u1"]).startswith(
        f"{root}/u.data, line 6: user 196, item 242 is rated again (first at {root}/u.data, line 1)"
    )
    (root / "u.data").write_text(_tab([(196, 242, 1, 881250948)] + U_DATA))  # now the first line is the repeat
    got = prepare("ml-100k", root, splits=["u1"], duplicates=policy)
    assert got.summary["ratings"] == 5 and got.summary["duplicates"] == policy and got.summary["duplicate_rows_removed"] == 1
    assert got.users == [196, 186, 22, 244] and got.column("user") == [0, 1, 2, 0, 3]  # the kept rows in file order
    assert got.column("rating") == [rating, 3.0, 1.0, 5.0, 2.0]  # the pair's ratings were 1 then 3
    assert got.column("ts")[0] == 881250949  # the pair's last line
    assert got.column("split_u1") == [TRAIN, TRAIN, TEST, TRAIN, TEST]


def test_ml1m_double_colon_format_with_movies_and_users(tmp_path, prepare):
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (root / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3000::Crème de la crème (1999)::Comedy\n".encode("latin-1")
    )
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    got = prepare("ml-1m", root, splits=["leave-last-out"])
    assert (got.summary["users"], got.summary["items"], got.summary["ratings"]) == (2, 2, 3)
    assert got.items == [1193, 661]
    assert got.column("rating") == [5.0, 3.0, 4.0]
    assert got.column("ts") == [978300760, 978302109, 978298413]
    assert got.column("split_leave_last_out") == [TRAIN, TEST, TRAIN]  # user 1's latest is 661
    items = got.table("items.parquet").to_pydict()
    assert items["title"] == ["One Flew Over the Cuckoo's Nest", "James and the Giant Peach"]
    assert items["genres"][1] == ["Animation", "Children's", "Musical"]
    assert got.table("users.parquet").to_pydict()["gender"] == ["F", "M"]


ML25M_MOVIES = (
    "movieId,title,genres\n"
    "296,Pulp Fiction (1994),Comedy|Crime|Drama|Thriller\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    '34048,"""Great Performances"" Cats (1998)",Musical\n'
    "209171,Women of Devil's Island (1962),(no genres listed)\n"
)


def test_ml25m_csv_in_zip_with_quoted_titles(tmp_path, prepare):
    files = tmp_path / "files"
    files.mkdir()
    (files / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,11,3.5,1147868817\n2,34048,0.5,1147868828\n2,209171,4.5,1147878820\n"
    )
    (files / "movies.csv").write_text(ML25M_MOVIES)
    got = prepare("ml-25m", zip_dir(files, tmp_path / "ml-25m.zip", "ml-25m"))
    assert got.column("rating") == [5.0, 3.5, 0.5, 4.5]
    assert got.items == [296, 11, 34048, 209171]
    assert got.summary["default_split"] == "user_ratio"
    assert set(got.column("split_user_ratio")) <= {TRAIN, 1, TEST}
    items = got.table("items.parquet").to_pydict()
    assert items["title"] == ["Pulp Fiction", "American President, The", '"Great Performances" Cats', "Women of Devil's Island"]
    assert items["year"] == [1994, 1995, 1998, 1962]
    assert items["genres"][3] == []


def test_ml25m_rating_off_the_half_star_scale(tmp_path, fails):
    root = tmp_path / "ml-25m"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,11,5.5,1147868817\n")
    assert fails("ml-25m", root) == f"{root}/ratings.csv, line 3: rating 5.5 is outside MovieLens 25M's scale (0.5 to 5)"


@pytest.mark.parametrize(
    "header",
    ["userId,movieId,rating", "user,movie,rating,timestamp"],
)
def test_ml25m_wrong_header(tmp_path, fails, header):
    root = tmp_path / "ml-25m"
    root.mkdir()
    (root / "ratings.csv").write_text(f"{header}\n1,296,5.0,1147880044\n")
    assert fails("ml-25m", root).startswith(f"{root}/ratings.csv, line 1: expected the header 'userId,movieId,rating,timestamp'")
