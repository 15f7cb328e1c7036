#[palisade::protocol]
trait Chat {
    #[push("said")]
    fn said(payload: String) {}
}

fn main() {}
